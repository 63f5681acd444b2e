package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
)

// TestRequestWithoutAnswer: a request that a service receives but does not
// answer ends, when its timeout runs out or the operator interrupts it, with
// a message that says which and that what was asked may have been done,
// not with a bare "context deadline exceeded" or "context canceled".
func TestRequestWithoutAnswer(t *testing.T) {
	n := testenv.StartNATS(t)
	nc := n.Connect(t)
	const subject = "test.silent"
	sub, err := nc.SubscribeSync(subject) // receives, never answers
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	var stderr bytes.Buffer
	a := &app{stdout: &bytes.Buffer{}, stderr: &stderr, timeout: time.Minute}

	err = a.requestConn(context.Background(), nc, subject, struct{}{}, nil, 200*time.Millisecond, nil)
	if err == nil || !strings.Contains(err.Error(), "no answer to test.silent within 200ms (--timeout)") ||
		!strings.Contains(err.Error(), "may or may not have been done") {
		t.Errorf("timed out: %v", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	start := time.Now()
	err = a.requestConn(ctx, nc, subject, struct{}{}, nil, time.Minute, nil)
	if err == nil || !strings.Contains(err.Error(), "interrupted while waiting for the answer to test.silent") {
		t.Errorf("interrupted: %v", err)
	}
	if waited := time.Since(start); waited > 30*time.Second {
		t.Errorf("an interrupted request went on for %s", waited)
	}

	// A command's own deadline (--wait-timeout) running out first.
	dctx, dcancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer dcancel()
	err = a.requestConn(dctx, nc, subject, struct{}{}, nil, time.Minute, nil)
	if err == nil || !strings.Contains(err.Error(), "no answer to test.silent before the command's deadline") {
		t.Errorf("deadline: %v", err)
	}
	if got, _, _ := sub.Pending(); got != 3 {
		t.Errorf("the service received %d requests, want 3", got)
	}
}
