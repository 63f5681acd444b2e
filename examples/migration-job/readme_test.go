package main

import (
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/migration"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
)

// readmeCommands returns the `nats pub` commands of README.md's sh blocks,
// split into arguments.
func readmeCommands(t *testing.T) [][]string {
	t.Helper()
	lines, err := testenv.ShellBlocks("README.md")
	if err != nil {
		t.Fatal(err)
	}
	var cmds [][]string
	for _, l := range lines {
		if !strings.HasPrefix(l.Text, "nats pub ") {
			continue
		}
		args, err := testenv.ShellWords(l.Text)
		if err != nil {
			t.Fatalf("README.md:%d: %v", l.Line, err)
		}
		cmds = append(cmds, args)
	}
	return cmds
}

// TestReadmeExamples runs every `nats pub` command of the README with the
// nats CLI: the events are stored in CHROMA_MIGRATIONS, valid by the
// contract the watchdog applies, with the Nats-Msg-Id of their body's id,
// stored once when sent again; the control command reaches a job.
func TestReadmeExamples(t *testing.T) {
	cli := testenv.NatsCLI(t)
	n := testenv.StartNATS(t)
	const job = "reindex-2025-11"
	j, err := migration.New(n.Connect(t), job)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	seen := make(chan contract.Control, 1)
	j.OnControl(func(c contract.Control) { seen <- c })

	natsCLI := func(args []string) string {
		t.Helper()
		cmd := exec.CommandContext(t.Context(), cli, append([]string{"--no-context", "--server", n.URL}, args[1:]...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}

	cmds := readmeCommands(t)
	var events, controls int
	for _, c := range cmds {
		if len(c) < 3 || c[0] != "nats" || c[1] != "pub" {
			t.Fatalf("not a nats pub command: %q", c)
		}
		out := natsCLI(c)
		if strings.HasPrefix(c[len(c)-2], "chroma.control.") {
			controls++
			select {
			case got := <-seen:
				if got.Command != contract.ControlPause || !strings.HasPrefix(got.Reason, "operator:") {
					t.Errorf("job saw %+v", got)
				}
			case <-time.After(5 * time.Second):
				t.Errorf("the job did not see the README's control command")
			}
			continue
		}
		events++
		if !strings.Contains(out, contract.StreamMigrations) {
			t.Errorf("%s: output %q does not name the stream", c[3], out)
		}
	}
	if events != 6 || controls != 1 {
		t.Fatalf("README has %d event and %d control commands, want 6 and 1", events, controls)
	}
	if !j.Paused() {
		t.Error("the job is not paused after the README's pause")
	}

	stored := jobEvents(t, n, job) // validates each by the contract
	if len(stored) != events {
		t.Fatalf("%d events stored, want %d", len(stored), events)
	}
	for _, ev := range stored {
		if !strings.HasPrefix(ev.ID, job+"-") || ev.Time.IsZero() {
			t.Errorf("event %+v", ev)
		}
	}
	// Sent again, an event is acknowledged as a duplicate and stored once.
	natsCLI(cmds[0])
	if got := len(jobEvents(t, n, job)); got != events {
		t.Errorf("%d events stored after resending the first, want %d", got, events)
	}
}
