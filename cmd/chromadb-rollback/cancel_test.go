package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
	"github.com/chromadb-rollback/chromadb-rollback/services/restorer"
	"github.com/chromadb-rollback/chromadb-rollback/services/snapshotter"
)

// holdWrites is a proxy in front of Chroma that holds every add and upsert
// (after the first pass ones) until released.
type holdWrites struct {
	pass    atomic.Int64 // adds and upserts let through before holding
	held    atomic.Int64
	release chan struct{}
	once    sync.Once
}

func (h *holdWrites) Release() { h.once.Do(func() { close(h.release) }) }

func startHoldWrites(t *testing.T, upstream string) (*holdWrites, string) {
	u, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	h := &holdWrites{release: make(chan struct{})}
	rp := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if (strings.HasSuffix(r.URL.Path, "/add") || strings.HasSuffix(r.URL.Path, "/upsert")) && h.pass.Add(-1) < 0 {
			h.held.Add(1)
			<-h.release
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(h.Release) // before srv.Close: cleanups run last first
	return h, srv.URL
}

// TestCLIRollbackCancel: a CLI that stops waiting for a rollback says how
// to follow it and how to stop it, and rollback-cancel stops it: the
// staged collection is discarded, the live ones keep what they held, the
// fence is lowered, and the command waits until the rollback has stopped.
// Before rollback-cancel, stopping a rollback took `nats req
// chroma.api.rollback.cancel`, which neither the CLI nor the runbook
// mentioned, and an interrupted wait pointed to `snapshot list`.
func TestCLIRollbackCancel(t *testing.T) {
	ch := testenv.StartChroma(t)
	cc := ch.Client(t)
	if err := testenv.SeedWorkload(t.Context(), cc, tTenant, tDB, 2, 400, 16, 80); err != nil {
		t.Fatal(err)
	}
	hold, proxyURL := startHoldWrites(t, ch.URL)
	n := testenv.StartNATS(t)
	subj := contract.Subjects{Prefix: "chroma"}
	snap, err := snapshotter.New(snapshotter.Config{ChromaURL: ch.URL, DataDir: t.TempDir()}, n.Connect(t), subj, cc, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	pc, err := chroma.New(proxyURL)
	if err != nil {
		t.Fatal(err)
	}
	rest, err := restorer.New(restorer.Config{ChromaURL: proxyURL}, n.Connect(t), subj, pc, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runAll(ctx, snap.Run, rest.Run) }()
	t.Cleanup(func() { cancel(); <-done })
	c := cli{t: t, url: n.URL}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := n.Conn.Request(subj.API("rollback", "status"), []byte(`{}`), time.Second); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("restorer does not answer")
		}
	}
	if code, _, stderr := c.run("snapshot", "create", "--name", "pre"); code != exitOK {
		t.Fatalf("snapshot create: exit %d: %s", code, stderr)
	}
	before := state(t, cc)
	badMigration(t, cc, before)
	// A collection not in the snapshot: the plan warns that it is kept.
	if _, err := cc.CreateCollection(t.Context(), tTenant, tDB, chroma.CreateCollection{Name: "added_by_migration"}); err != nil {
		t.Fatal(err)
	}
	damaged := state(t, cc)

	// The wait gives up while the restore's first add is held.
	code, _, stderr := c.run("rollback", "pre", "--yes", "--no-safety-snapshot", "--wait-timeout", "2s")
	m := regexp.MustCompile(`stopped waiting for operation (op_\S+): not ended after 2s \(--wait-timeout\); it goes on in the services: follow it with ` +
		"`chromadb-rollback rollback-status --wait (op_\\S+)`, stop it with `chromadb-rollback rollback-cancel (op_\\S+)`").FindStringSubmatch(stderr)
	if code != exitFailed || m == nil || m[1] != m[2] || m[1] != m[3] {
		t.Fatalf("rollback that outlasts --wait-timeout: exit %d, %s; want %d saying how to follow and stop it", code, stderr, exitFailed)
	}
	op := m[1]
	if hold.held.Load() == 0 {
		t.Fatal("no add was held: the rollback ended before the wait did?")
	}

	// rollback-cancel asks, then waits for the end: let the held add go
	// once the cancel is recorded.
	cancelled := c.start("", "rollback-cancel", op)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := n.Assets.State.Get(t.Context(), contract.CancelKey(op)); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the cancel was not recorded")
		}
	}
	hold.Release()
	r := await(t, cancelled, 2*time.Minute, "rollback-cancel")
	if r.code != exitOK || !strings.Contains(r.stdout, "Rollback "+op+": cancelled") || !strings.Contains(r.stderr, "cancel requested by ") || !strings.Contains(r.stderr, "stops at the next batch") {
		t.Fatalf("rollback-cancel: exit %d\n%s%s\nwant 0, the request noted and the rollback cancelled", r.code, r.stdout, r.stderr)
	}
	// Not the plan's warnings again: the rollback printed them when it
	// started.
	if e, err := n.Assets.State.Get(t.Context(), contract.OperationKey(op)); err != nil {
		t.Error(err)
	} else {
		var rec contract.Operation
		if err := json.Unmarshal(e.Value(), &rec); err != nil || rec.Plan == nil || len(rec.Plan.Warnings) == 0 {
			t.Fatalf("operation %s: %v; the test needs a plan with warnings: %s", op, err, e.Value())
		}
		for _, w := range rec.Plan.Warnings {
			if strings.Contains(r.stderr+r.stdout, w) {
				t.Errorf("rollback-cancel repeats the plan's warning %q:\n%s%s", w, r.stdout, r.stderr)
			}
		}
	}
	// The collection it stopped in was not checked, and says so.
	if !strings.Contains(r.stdout, "not checked") || strings.Contains(r.stdout, "bit-exact") {
		t.Errorf("report of the cancelled rollback:\n%s\nwant its unfinished collection not checked", r.stdout)
	}
	// Nothing of the cancelled restore is live, and the fence is down.
	sameState(t, "after the cancelled rollback", state(t, cc), damaged)
	if _, err := n.Assets.State.Get(t.Context(), contract.FenceKey(tTenant, tDB)); err == nil {
		t.Error("the fence is still raised after the cancelled rollback")
	}

	// An ended rollback cannot be cancelled; an unknown one is not found.
	if code, _, stderr := c.run("rollback-cancel", op); code != exitFailed || !strings.Contains(stderr, "has already ended: cancelled") {
		t.Errorf("rollback-cancel of the cancelled rollback: exit %d, %s", code, stderr)
	}
	if code, _, stderr := c.run("rollback-cancel", "op_20250101T000000Z_000000000000"); code != exitFailed || !strings.Contains(stderr, "op_20250101T000000Z_000000000000") {
		t.Errorf("rollback-cancel of an unknown operation: exit %d, %s", code, stderr)
	}
	if code, _, stderr := c.run("rollback-cancel"); code != exitUsage {
		t.Errorf("rollback-cancel without an id: exit %d, %s", code, stderr)
	}
}
