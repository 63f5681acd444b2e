# The one entry point: CI calls `make test` and nothing else.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
GO ?= go
TOOLS := $(CURDIR)/.tools
MODULES := pkg services/snapshotter services/restorer services/watchdog services/auditor cmd/chromadb-rollback examples/migration-job examples/dashboard tests/cluster
CHROMA_NPM := chromadb-js-bindings-linux-x64-gnu@1.0.5
NATSCLI := github.com/nats-io/natscli/nats@v0.5.0
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.7.0
TEST_TIMEOUT ?= 15m
# make test runs every module's packages in one go test: two packages at a
# time (GOMAXPROCS), as the tests spend most of their time waiting on
# Chroma and JetStream. The longest start first, so that none runs alone
# at the end.
TEST_FIRST := tests/cluster services/restorer cmd/chromadb-rollback services/snapshotter
TEST_PACKAGES := $(foreach m,$(TEST_FIRST) $(filter-out $(TEST_FIRST),$(MODULES)),./$(m)/...)
# What the tests log and audit, checked for secrets after them (pkg/testenv).
TEST_ARTIFACTS ?= $(CURDIR)/.artifacts/test
export GOBIN := $(TOOLS)/bin

.PHONY: all build run test tools bench lint tidy clean

all: build

build:
	@mkdir -p bin
	cd cmd/chromadb-rollback && $(GO) build -o $(CURDIR)/bin/chromadb-rollback .
	cd services/snapshotter && $(GO) build -o $(CURDIR)/bin/snapshotter ./cmd/snapshotter
	cd services/restorer && $(GO) build -o $(CURDIR)/bin/restorer ./cmd/restorer
	cd services/watchdog && $(GO) build -o $(CURDIR)/bin/watchdog ./cmd/watchdog
	cd services/auditor && $(GO) build -o $(CURDIR)/bin/auditor ./cmd/auditor

run: build
	@scripts/run.sh

## tools: the pinned Chroma server (npm) and the nats CLI, into .tools/ (cached)
tools: $(TOOLS)/.chroma-installed $(TOOLS)/bin/nats

$(TOOLS)/.chroma-installed:
	@mkdir -p $(TOOLS)
	npm install --no-audit --no-fund --loglevel=error --prefix $(TOOLS) $(CHROMA_NPM)
	@touch $@

$(TOOLS)/bin/nats:
	@mkdir -p $(TOOLS)/bin
	$(GO) install $(NATSCLI)

$(TOOLS)/bin/staticcheck:
	@mkdir -p $(TOOLS)/bin
	$(GO) install $(STATICCHECK)

## test: every module's tests with -race, against real Chroma and JetStream;
## then the figures of the load test, and no test secret in any log or audit event
test: tools
	@rm -rf $(TEST_ARTIFACTS) && mkdir -p $(TEST_ARTIFACTS)
	TEST_ARTIFACTS=$(TEST_ARTIFACTS) $(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) $(TEST_PACKAGES)
	@if [ -f $(TEST_ARTIFACTS)/figures.txt ]; then cat $(TEST_ARTIFACTS)/figures.txt; fi
	@scripts/check-secrets.sh $(TEST_ARTIFACTS)

## bench: seeds the seed's and a scale workload, measures raw get vs snapshot
bench: tools build
	cd services/snapshotter && $(GO) test -run '^$$' -bench 'BenchmarkSnapshotWorkloads' -benchtime 1x -timeout 60m .
	cd services/restorer && $(GO) test -run '^$$' -bench 'BenchmarkRollbackWorkloads' -benchtime 1x -timeout 60m ./bench/

lint: $(TOOLS)/bin/staticcheck
	@out=$$(gofmt -l $(MODULES)); if [ -n "$$out" ]; then echo "gofmt:"; echo "$$out"; exit 1; fi
	@for m in $(MODULES); do (cd $$m && $(GO) vet ./... && $(TOOLS)/bin/staticcheck ./...) || exit 1; done
	@# each module also builds on its own, as a container build of one service does
	@for m in $(MODULES); do (cd $$m && GOWORK=off $(GO) vet ./...) || { echo "$$m does not build alone: GOWORK=off go mod tidy there"; exit 1; }; done

tidy:
	@for m in $(MODULES); do (cd $$m && GOWORK=off $(GO) mod tidy) || exit 1; done

clean:
	rm -rf bin
