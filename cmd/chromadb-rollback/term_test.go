package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
)

func TestTermWriter(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"plain text\twith a tab\n", "plain text\twith a tab\n"},
		{"clear\x1b[2Jthe screen", `clear\x1b[2Jthe screen`},
		{"back\rover\x08and\x7fdel\x00", `back\rover\band\x7fdel\x00`},
		{"c1\u009b and\u2028separators", `c1\u009b and\u2028separators`},
		{"prød ✓ \xff kept", "prød ✓ \xff kept"}, // other bytes as they are, invalid UTF-8 too
	} {
		var b bytes.Buffer
		n, err := termWriter{&b}.Write([]byte(c.in))
		if err != nil || n != len(c.in) || b.String() != c.want {
			t.Errorf("Write(%q) = %d, %v, wrote %q; want %d, %q", c.in, n, err, b.String(), len(c.in), c.want)
		}
		if got := termEscape(c.in); got != c.want {
			t.Errorf("termEscape(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// TestTable checks that columns line up as a terminal shows them, CJK
// text included, and that a cell cannot break its row.
func TestTable(t *testing.T) {
	tb := newTable("  ", "BATCH", "FIRST ID", "LAST")
	tb.row("batch_000000", "文書-一", 1)
	tb.row("b1", "ascii-id", "x")
	tb.line("difference: a note")
	tb.row("evil\n  forged\trow", "id", "last\r\nline")
	tb.row("b2", "", "")
	var b bytes.Buffer
	if err := tb.print(&b); err != nil {
		t.Fatal(err)
	}
	want := "" +
		"  BATCH              FIRST ID  LAST\n" +
		"  batch_000000       文書-一   1\n" +
		"  b1                 ascii-id  x\n" +
		"  difference: a note\n" +
		"  evil   forged row  id        last  line\n" +
		"  b2\n"
	if b.String() != want {
		t.Errorf("table:\n%s\nwant:\n%s", b.String(), want)
	}
}

// TestStatusOneRowPerEntry checks that a fence's reason and an alert's
// detail holding line breaks print as one row each.
func TestStatusOneRowPerEntry(t *testing.T) {
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	r := &contract.StatusReport{Envelope: contract.Envelope{Time: now}, Watchdog: "w1",
		Fences: []contract.Fence{{Tenant: "acme", Database: "prod", OpID: "op-1", RaisedAt: now,
			Reason: "rollback\n  acme/other  op-forged  2026-11-29T12:00:00Z  forged"}},
		Alerts: []contract.StatusAlert{{Name: "chroma_unreachable", Since: now, Detail: "dial: refused\nsnapshot_deleted\t-\tforged"}},
	}
	var b bytes.Buffer
	printStatus(&b, r)
	out := b.String()
	if strings.Contains(out, "\n  acme/other") || strings.Contains(out, "\nsnapshot_deleted") {
		t.Errorf("a reason or detail started a line of its own:\n%s", out)
	}
	for _, want := range []string{"rollback   acme/other  op-forged", "dial: refused snapshot_deleted - forged"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
}

// TestStatusPausedAfterFailedRollback: a run whose triggered rollback
// failed was told to pause and stays paused; its row said PAUSED BY "-".
func TestStatusPausedAfterFailedRollback(t *testing.T) {
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	m := contract.MigrationRecord{Job: "j1", Tenant: "acme", Database: "prod", Status: contract.MigrationRunning, StartedAt: now,
		Trigger: contract.TriggerValidation, RollbackOpID: "op_rb_j1_1_validation", RollbackStatus: contract.StatusFailed}
	var b bytes.Buffer
	printStatus(&b, &contract.StatusReport{Envelope: contract.Envelope{Time: now}, Watchdog: "w1", Migrations: []contract.MigrationRecord{m}})
	if !strings.Contains(b.String(), "rollback failed (see Alerts)") {
		t.Errorf("status of a run whose rollback failed:\n%s", b.String())
	}
	// Aborted by the time trigger, it is not paused.
	m.AbortSentAt = now
	b.Reset()
	printStatus(&b, &contract.StatusReport{Envelope: contract.Envelope{Time: now}, Watchdog: "w1", Migrations: []contract.MigrationRecord{m}})
	if strings.Contains(b.String(), "see Alerts") {
		t.Errorf("status of an aborted run whose rollback failed:\n%s", b.String())
	}
}
