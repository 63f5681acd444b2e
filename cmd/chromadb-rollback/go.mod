module github.com/chromadb-rollback/chromadb-rollback/cmd/chromadb-rollback

go 1.26.0

require github.com/chromadb-rollback/chromadb-rollback/pkg v0.0.0

require (
	filippo.io/hpke v0.4.0 // indirect
	github.com/antithesishq/antithesis-sdk-go v0.8.0-default-no-op // indirect
	github.com/beorn7/perks v1.0.1 // indirect
	github.com/cenkalti/backoff/v4 v4.3.0 // indirect
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/google/go-tpm v0.9.8 // indirect
	github.com/inconshreveable/mousetrap v1.1.0 // indirect
	github.com/klauspost/compress v1.20.4 // indirect
	github.com/minio/highwayhash v1.0.4 // indirect
	github.com/mitchellh/colorstring v0.0.0-20190213212951-d06e56a500db // indirect
	github.com/munnerz/goautoneg v0.0.0-20191010083416-a7dc8b61c822 // indirect
	github.com/nats-io/jwt/v2 v2.8.2 // indirect
	github.com/nats-io/nats-server/v2 v2.15.2 // indirect
	github.com/nats-io/nkeys v0.4.16 // indirect
	github.com/nats-io/nuid v1.0.1 // indirect
	github.com/prometheus/client_golang v1.25.0 // indirect
	github.com/prometheus/procfs v0.22.0 // indirect
	github.com/rivo/uniseg v0.4.7 // indirect
	github.com/santhosh-tekuri/jsonschema/v6 v6.0.3 // indirect
	github.com/spf13/pflag v1.0.9 // indirect
	golang.org/x/crypto v0.58.0 // indirect
	golang.org/x/sys v0.50.0 // indirect
	golang.org/x/text v0.43.0 // indirect
	golang.org/x/time v0.16.0 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)

replace github.com/chromadb-rollback/chromadb-rollback/pkg => ../../pkg

require (
	filippo.io/age v1.3.2
	github.com/chromadb-rollback/chromadb-rollback/services/auditor v0.0.0
	github.com/chromadb-rollback/chromadb-rollback/services/restorer v0.0.0
	github.com/chromadb-rollback/chromadb-rollback/services/snapshotter v0.0.0
	github.com/chromadb-rollback/chromadb-rollback/services/watchdog v0.0.0
	github.com/mattn/go-runewidth v0.0.16
	github.com/nats-io/nats.go v1.55.0
	github.com/prometheus/client_model v0.6.3
	github.com/prometheus/common v0.72.0
	github.com/schollz/progressbar/v3 v3.19.1
	github.com/spf13/cobra v1.10.2
	golang.org/x/term v0.48.0
)

replace github.com/chromadb-rollback/chromadb-rollback/services/snapshotter => ../../services/snapshotter

replace github.com/chromadb-rollback/chromadb-rollback/services/restorer => ../../services/restorer

replace github.com/chromadb-rollback/chromadb-rollback/services/watchdog => ../../services/watchdog

replace github.com/chromadb-rollback/chromadb-rollback/services/auditor => ../../services/auditor
