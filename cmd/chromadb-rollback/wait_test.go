package main

import (
	"bytes"
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
	_, err := a.waitOperation(t.Context(), nc, "op_never_started", time.Minute)
	if err == nil || !strings.Contains(err.Error(), "connection to NATS is closed") || !strings.Contains(err.Error(), "goes on") {
		t.Fatalf("wait after the connection closed: %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the wait ended %v after it began; want right after the connection closed", d)
	}
}
