package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
)

// TestWaitEndsWhenTheConnectionCloses: a wait whose connection closes
// (closed outright here; a CLI with a reconnect limit would get there when
// NATS stays away) ends at once with an error saying the operation goes
// on. The closed watch used to read as an endless run of "initial values
// delivered", spinning until --wait-timeout.
func TestWaitEndsWhenTheConnectionCloses(t *testing.T) {
	n := testenv.StartNATS(t)
	var errb bytes.Buffer
	a := &app{stdout: io.Discard, stderr: &errb, subj: contract.Subjects{Prefix: "chroma"}}
	nc := n.Connect(t)
	go func() {
		time.Sleep(300 * time.Millisecond)
		nc.Close()
	}()
	start := time.Now()
	_, err := a.waitOperation(t.Context(), nc, "op_never_started", time.Minute, "follow it")
	if err == nil || !strings.Contains(err.Error(), "connection to NATS is closed") || !strings.Contains(err.Error(), "goes on") {
		t.Fatalf("wait after the connection closed: %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the wait ended %v after it began; want right after the connection closed", d)
	}
}

// TestWaitEndsWhenTheRollbackIsCancelled: a rollback cancelled while a
// CLI waits for it (chroma.api.rollback.cancel) ends the wait at once, and
// the CLI fails saying it was cancelled, not that it did not verify. The
// wait used to end only on completed or failed, so it ran to
// --wait-timeout.
func TestWaitEndsWhenTheRollbackIsCancelled(t *testing.T) {
	n := testenv.StartNATS(t)
	a := &app{stdout: io.Discard, stderr: io.Discard, subj: contract.Subjects{Prefix: "chroma"}}
	nc := n.Connect(t)
	// The put's own context is not the test's: the wait can see the
	// cancelled record, and the test end, before the put has its ack.
	put := func(status string) error {
		op := contract.Operation{OpID: "op_cancelled", Kind: "rollback", Status: status, Error: "cancelled by ops@example",
			Restore: &contract.RestoreReport{Cancelled: status == contract.StatusCancelled,
				Collections: []contract.RestoreCollectionReport{{Collection: "corpus"}}}}
		data, _ := json.Marshal(op)
		_, err := n.Assets.State.Put(context.Background(), contract.OperationKey(op.OpID), data)
		return err
	}
	if err := put(contract.StatusRunning); err != nil {
		t.Fatal(err)
	}
	cancelled := make(chan error, 1)
	go func() {
		time.Sleep(300 * time.Millisecond)
		cancelled <- put(contract.StatusCancelled)
	}()
	start := time.Now()
	op, err := a.waitOperation(t.Context(), nc, "op_cancelled", time.Minute, "follow it")
	if perr := <-cancelled; perr != nil {
		t.Fatalf("storing the cancelled operation: %v", perr)
	}
	if err != nil || op.Status != contract.StatusCancelled {
		t.Fatalf("wait: %+v, %v; want the cancelled operation", op, err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the wait ended %v after it began; want right after the cancel", d)
	}
	err = rollbackOutcome(op)
	var ee *exitError
	if err == nil || errors.As(err, &ee) || !strings.Contains(err.Error(), "was cancelled: cancelled by ops@example") {
		t.Errorf("outcome of a cancelled rollback: %v; want a plain failure (exit 1) saying it was cancelled", err)
	}
}
