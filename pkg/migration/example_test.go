package migration_test

import (
	"context"
	"errors"
	"log"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/migration"
	"github.com/nats-io/nats.go"
)

// A job announces itself, waits for the watchdog's snapshot, works in
// pages while obeying pause and abort, and reports its validation.
func Example() {
	ctx := context.Background()
	nc, err := nats.Connect(nats.DefaultURL)
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	job, err := migration.New(nc, "reindex-2025-11")
	if err != nil {
		log.Fatal(err)
	}
	defer job.Close()
	job.OnControl(func(c contract.Control) { log.Printf("told to %s: %s", c.Command, c.Reason) })

	if _, err := job.Start(ctx, migration.StartOptions{Tenant: "acme", Database: "prod", TakeSnapshot: true, TimeLimit: time.Hour}); err != nil {
		log.Fatal(err)
	}
	snap, err := job.WaitForSnapshot(ctx)
	if err != nil {
		_ = job.Fail(ctx, err)
		log.Fatal(err)
	}
	log.Printf("pre-migration snapshot %s", snap)

	var done int64
	for page := 0; page < 10; page++ {
		if err := job.WaitWhilePaused(ctx); err != nil { // ErrAborted after abort
			_ = job.Fail(ctx, err)
			if errors.Is(err, migration.ErrAborted) {
				return
			}
			log.Fatal(err)
		}
		done += 100 // write a page here
		_ = job.Heartbeat(ctx, "copy", done)
	}
	if err := job.ReportValidation(ctx, done, done,
		contract.CollectionValidation{Collection: "corpus.v1", ValidChunks: done, TotalChunks: done}); err != nil {
		log.Fatal(err)
	}
	if err := job.Complete(ctx); err != nil {
		log.Fatal(err)
	}
}
