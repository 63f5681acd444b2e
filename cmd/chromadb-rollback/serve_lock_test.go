package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
)

// TestServeRefusesDataDirInUse: a second serve given the data directory of
// a running one stops before it starts anything. Found by hand: it ran a
// second JetStream server on the same store and a second auditor appending
// to the same trail, and only a taken metrics port stopped it.
func TestServeRefusesDataDirInUse(t *testing.T) {
	ch := testenv.StartChroma(t)
	t.Setenv("NATS_URL", "")
	dataDir := t.TempDir()
	c := startServe(t, "--chroma-url", ch.URL, "--data-dir", dataDir)
	if code, _, stderr := c.run("snapshot", "create", "--name", "pre"); code != exitOK {
		t.Fatalf("snapshot create: exit %d: %s", code, stderr)
	}
	// Every audit event so far in the trail, so that it stays as it is.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if _, stdout, _ := c.run("health-check"); strings.Contains(stdout, " 0 audit events not yet in the trail") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the trail did not catch up with the audit stream")
		}
	}
	trail := filepath.Join(dataDir, contract.AuditTrailFile)
	before, err := os.ReadFile(trail)
	if err != nil {
		t.Fatal(err)
	}

	second := freeAddr(t)
	code, _, stderr := cli{t: t, url: "nats://" + second}.run("serve", "--chroma-url", ch.URL, "--data-dir", dataDir, "--listen", second, "--metrics-listen", "off")
	if code != exitFailed || !strings.Contains(stderr, "in use by another process") || !strings.Contains(stderr, "--data-dir") {
		t.Errorf("second serve on the same data dir: exit %d, %s; want %d saying the store is in use", code, stderr, exitFailed)
	}
	// Nothing of the second one ran: no server listened, the trail is as
	// it was, and the first one goes on.
	if code, _, _ := (cli{t: t, url: "nats://" + second}).run("health-check"); code == exitOK {
		t.Error("the second serve's NATS answers")
	}
	if after, err := os.ReadFile(trail); err != nil || string(after) != string(before) {
		t.Errorf("trail changed by the refused serve (%v):\n%s", err, after)
	}
	if code, stdout, stderr := c.run("snapshot", "verify", "pre"); code != exitOK {
		t.Errorf("first serve after the refusal: snapshot verify exit %d: %s%s", code, stdout, stderr)
	}
}
