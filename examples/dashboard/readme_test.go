package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
)

// readmeCommands returns the nats commands of the sh blocks in the README's
// Dashboards section, comments cut off.
func readmeCommands(t *testing.T) []string {
	t.Helper()
	lines, err := testenv.ShellBlocks("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var cmds []string
	for _, l := range lines {
		if l.Section == "Dashboards" && strings.HasPrefix(l.Text, "nats ") {
			cmds = append(cmds, l.Text)
		}
	}
	return cmds
}

// words splits a command line into arguments.
func words(t *testing.T, s string) []string {
	t.Helper()
	w, err := testenv.ShellWords(s)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// TestReadmeDashboardCommands runs the README's nats commands for
// dashboards with the real nats binary: the replay prints every event of the
// stream as one JSON line and stops; the filtered replay only the restorer's;
// the tail prints an event published while it runs; the durable consumer
// hands out and acknowledges what was stored.
func TestReadmeDashboardCommands(t *testing.T) {
	bin := testenv.NatsCLI(t)
	n := testenv.StartNATS(t)
	e := emitter{t: t, n: n}
	e.seed()
	e.day2Rollback("op_3")
	stored := 9

	cmds := readmeCommands(t)
	if len(cmds) != 6 {
		t.Fatalf("README's Dashboards section has %d nats commands, want 6: %q", len(cmds), cmds)
	}
	for _, c := range cmds {
		args := words(t, c)[1:]
		tail := strings.Contains(c, "--new")
		timeout := 30 * time.Second
		if tail {
			timeout = 2 * time.Second
			go func() {
				time.Sleep(700 * time.Millisecond)
				e.day2Rollback("op_tail")
			}()
		}
		ctx, cancel := context.WithTimeout(t.Context(), timeout)
		cmd := exec.CommandContext(ctx, bin, append([]string{"--no-context", "--server", n.URL}, args...)...)
		cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		stopped := ctx.Err() != nil
		cancel()
		switch {
		case tail && !stopped:
			t.Fatalf("%s: ended (%v) instead of following\n%s", c, err, errb.String())
		case !tail && err != nil:
			t.Fatalf("%s: %v\n%s%s", c, err, out.String(), errb.String())
		case strings.Contains(errb.String(), "nats: error"):
			t.Fatalf("%s: %s", c, errb.String())
		}
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		events := func() (evs []contract.AuditEvent) {
			for _, l := range lines {
				var ev contract.AuditEvent
				if err := json.Unmarshal([]byte(l), &ev); err != nil || ev.Type != contract.TypeAuditEvent {
					t.Fatalf("%s: line %q is not an audit event: %v", c, l, err)
				}
				evs = append(evs, ev)
			}
			return evs
		}
		switch {
		case tail:
			evs := events()
			if len(evs) != 1 || evs[0].OpID != "op_tail" {
				t.Errorf("%s printed %v, want only the event published while it ran", c, lines)
			}
			stored++
		case strings.Contains(c, "chroma.audit.restorer.>"):
			evs := events()
			for _, ev := range evs {
				if ev.Service != "restorer" {
					t.Errorf("%s printed an event of %s", c, ev.Service)
				}
			}
			if len(evs) != 3 {
				t.Errorf("%s printed %d events, want the restorer's 3", c, len(evs))
			}
		case args[0] == "sub":
			if evs := events(); len(evs) != stored {
				t.Errorf("%s printed %d events, want all %d", c, len(evs), stored)
			}
		case args[1] == "next":
			if got := strings.Count(out.String(), `"type":"chromadb-rollback.v1.audit_event"`); got != 5 {
				t.Errorf("%s handed out %d events, want 5:\n%s", c, got, out.String())
			}
		}
	}
	cons, err := n.JS.Consumer(t.Context(), contract.StreamAudit, "ops_board")
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if info.NumPending != uint64(stored-5) || info.AckFloor.Stream != 5 {
		t.Errorf("after nats consumer next: %d pending, acknowledged through %d; want %d and 5", info.NumPending, info.AckFloor.Stream, stored-5)
	}
	// The dashboard program reads on from there with the same durable: it
	// counts only what the CLI did not take.
	s := figures(t, "--nats-url", n.URL, "--durable", "ops_board", "--state", filepath.Join(t.TempDir(), "s.json"))
	if s.Events != stored-5 || s.LastSeq != uint64(stored) {
		t.Errorf("the dashboard counted %d events through %d, want the %d after the 5 the CLI took, through %d", s.Events, s.LastSeq, stored-5, stored)
	}
}
