package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/disk"
	"github.com/spf13/cobra"
)

func (a *app) statusCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show running migrations, raised fences, running operations, the newest verified snapshots, alerts and storage use",
		Long: `Ask the watchdog (chroma.api.status) what is going on: migrations not yet over
with their state, deadline, validation and triggered rollback (and why a
run's snapshot is unusable); raised write fences; operations not yet ended
with their progress; the newest verified snapshot of every tenant/database;
the alerts the watchdog sees now, among them every run whose triggered
rollback could not run, failed or is left to you, with what to do; and
storage use: the JetStream account against its limits, the bytes and
messages of every stream, key-value bucket and object store, and the free
space on the paths the watchdog watches.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			nc, err := a.connect()
			if err != nil {
				return err
			}
			defer nc.Close()
			req := contract.StatusRequest{Envelope: contract.NewEnvelope(contract.TypeStatusRequest), Actor: a.actor}
			var rep contract.StatusReport
			if err := a.request(cmd.Context(), nc, a.subj.API("status"), req, &rep, 0); err != nil {
				return err
			}
			if a.json {
				return a.printJSON(rep)
			}
			printStatus(a.stdout, &rep)
			return nil
		},
	}
}

// printStatus writes the report as text tables, one section each. Times
// left are counted from the report's own time, not this machine's clock.
func printStatus(w io.Writer, r *contract.StatusReport) {
	now := r.Time
	fmt.Fprintf(w, "Status from watchdog %s at %s\n", r.Watchdog, r.Time.UTC().Format(time.RFC3339))
	// section prints a table of n rows under its title; rows adds them.
	section := func(title string, n int, header []any, rows func(t *table)) {
		fmt.Fprintf(w, "\n%s (%d)\n", title, n)
		if n == 0 {
			fmt.Fprintln(w, "  none")
			return
		}
		t := newTable("  ", header...)
		rows(t)
		t.print(w)
	}
	section("Migrations", len(r.Migrations), []any{"JOB", "DATABASE", "STATUS", "SNAPSHOT", "STARTED", "DEADLINE", "VALIDATION", "TRIGGER", "ROLLBACK", "PAUSED BY"}, func(t *table) {
		for _, m := range r.Migrations {
			t.row(m.Job, m.Tenant+"/"+m.Database, m.Status, snapshotText(&m),
				stamp(m.StartedAt), deadlineText(m.Deadline, now), validationText(m.Validation), dash(m.Trigger),
				rollbackText(&m), pausedText(&m, fenceOf(r.Fences, m.Tenant, m.Database)))
		}
	})
	for _, m := range r.Migrations {
		if !m.LastHeartbeat.IsZero() {
			fmt.Fprintf(w, "  heartbeat of %s: %s (%s ago)\n", oneLine(m.Job), oneLine(heartbeatText(&m)), now.Sub(m.LastHeartbeat).Round(time.Second))
		}
		if m.SnapshotError != "" {
			fmt.Fprintf(w, "  snapshot_error of %s: %s\n", oneLine(m.Job), oneLine(m.SnapshotError))
		}
	}
	section("Fences", len(r.Fences), []any{"DATABASE", "OPERATION", "RAISED", "REASON"}, func(t *table) {
		for _, f := range r.Fences {
			t.row(f.Tenant+"/"+f.Database, f.OpID, stamp(f.RaisedAt), f.Reason)
		}
	})
	section("Operations", len(r.Operations), []any{"OPERATION", "KIND", "STATUS", "PHASE", "DATABASE", "PROGRESS"}, func(t *table) {
		for _, o := range r.Operations {
			op := o.Operation
			db := "-"
			if op.Tenant != "" {
				db = op.Tenant + "/" + op.Database
			}
			status := op.Status
			if op.Instance != "" {
				status += " on " + op.Instance // whose logs to read
			}
			t.row(op.OpID, op.Kind, status, dash(op.Phase), db, progressText(o.Progress))
		}
	})
	section("Newest verified snapshots", len(r.Snapshots), []any{"DATABASE", "SNAPSHOT", "NAME", "HOLDS", "RECORDS", "SIZE", "TAKEN", "VERIFIED"}, func(t *table) {
		for _, s := range r.Snapshots {
			holds := "all collections"
			if s.Partial {
				holds = "some collections"
			}
			taken := s.TakenAt
			if taken.IsZero() { // a watchdog older than taken_at
				taken = s.StartedAt
			}
			verified := stamp(s.VerifiedAt)
			if s.ArchiveMissing {
				verified += ", ARCHIVE MISSING: cannot be restored"
			}
			t.row(s.Tenant+"/"+s.Database, s.SnapshotID, s.Name, holds, s.TotalRecords, sizeText(s.Size), stamp(taken), verified)
		}
	})
	section("Alerts", len(r.Alerts), []any{"ALERT", "SINCE", "DETAIL"}, func(t *table) {
		for _, al := range r.Alerts {
			t.row(al.Name, stamp(al.Since), al.Detail)
		}
	})
	if s := r.Storage; s != nil { // a watchdog older than the storage figures sends none
		printStorage(w, s)
	}
}

// printStorage writes the storage section: the JetStream account against
// its limits, each stream, bucket and object store, the watched paths.
func printStorage(w io.Writer, s *contract.StorageUse) {
	fmt.Fprintln(w, "\nStorage")
	if a := s.Account; a != nil {
		fmt.Fprintf(w, "  JetStream account: file %s of %s, memory %s of %s, streams %d of %s, consumers %d of %s\n",
			disk.Size(a.StoreBytes), limitBytes(a.MaxStoreBytes), disk.Size(a.MemoryBytes), limitBytes(a.MaxMemoryBytes),
			a.Streams, limitCount(a.MaxStreams), a.Consumers, limitCount(a.MaxConsumers))
	}
	t := newTable("  ", "NAME", "KIND", "STORAGE", "MESSAGES", "BYTES", "LIMIT")
	for _, st := range s.Streams {
		t.row(st.Name, st.Kind, st.Storage, st.Messages, disk.Size(st.Bytes), limitBytes(st.MaxBytes))
	}
	t.print(w)
	if len(s.Disks) > 0 {
		t = newTable("  ", "WATCHED PATH", "FREE")
		for _, d := range s.Disks {
			free := disk.Size(d.FreeBytes)
			if d.Error != "" {
				free = "unknown: " + d.Error
			}
			t.row(d.Path, free)
		}
		t.print(w)
	}
	for _, e := range s.Errors {
		fmt.Fprintf(w, "  not read: %s\n", oneLine(e))
	}
}

// sizeText prints an object's size for a table; --json keeps the bytes.
func sizeText(n int64) string { return disk.Size(uint64(max(n, 0))) }

// limitBytes prints a JetStream byte limit; 0 or less is none.
func limitBytes(n int64) string {
	if n <= 0 {
		return "no limit"
	}
	return disk.Size(uint64(n))
}

// limitCount prints a JetStream count limit; 0 or less is none.
func limitCount(n int) string {
	if n <= 0 {
		return "no limit"
	}
	return fmt.Sprint(n)
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func deadlineText(d, now time.Time) string {
	if d.IsZero() {
		return "-"
	}
	left := d.Sub(now).Round(time.Second)
	if left >= 0 {
		return fmt.Sprintf("%s (in %s)", stamp(d), left)
	}
	return fmt.Sprintf("%s (%s ago)", stamp(d), -left)
}

// heartbeatText is what a job's latest heartbeat said: its phase and
// the records it had done.
func heartbeatText(m *contract.MigrationRecord) string {
	var said []string
	if p := strings.TrimSpace(m.Phase); p != "" {
		said = append(said, p)
	}
	if m.DoneRecords > 0 {
		said = append(said, fmt.Sprintf("%d records done", m.DoneRecords))
	}
	return dash(strings.Join(said, ", "))
}

func validationText(v *contract.MigrationValidation) string {
	if v == nil {
		return "-"
	}
	cmp := ">="
	if v.Ratio < v.Threshold {
		cmp = "<"
	}
	return fmt.Sprintf("%d/%d = %.4f %s %g", v.ValidChunks, v.TotalChunks, v.Ratio, cmp, v.Threshold)
}

// snapshotText says which snapshot the run's rollback would restore: the
// pinned id (with the name the job gave), one being taken, one named but
// not found yet, or none that can be used.
func snapshotText(m *contract.MigrationRecord) string {
	switch {
	case m.SnapshotError != "":
		return "unusable (see snapshot_error)"
	case m.PinnedSnapshotID != "" && m.SnapshotID != "" && m.SnapshotID != m.PinnedSnapshotID:
		return m.PinnedSnapshotID + " (" + m.SnapshotID + ")"
	case m.PinnedSnapshotID != "":
		return m.PinnedSnapshotID
	case m.TakeSnapshot && m.SnapshotID == "":
		return "being taken"
	case m.SnapshotID != "":
		return m.SnapshotID + " (not found yet)"
	}
	return "-"
}

func rollbackText(m *contract.MigrationRecord) string {
	if m.RollbackOpID == "" {
		return "-"
	}
	out := m.RollbackOpID + " " + m.RollbackStatus
	if len(m.RollbackCollections) > 0 {
		out += " (partial: " + strings.Join(m.RollbackCollections, ",") + ")"
	}
	return out
}

// pausedText lists why a run is paused: the watchdog's reasons, a
// rollback's write fence on its database (the restorer told it to pause;
// its record does not say so), and its own triggered rollback that did not
// restore anything.
func pausedText(m *contract.MigrationRecord, fence *contract.Fence) string {
	var out []string
	for _, p := range m.PausedBy {
		out = append(out, p.Reason)
	}
	// A triggered rollback that failed, was cancelled or could not run
	// leaves the job paused, not aborted (the time trigger aborts it
	// first), until an operator ends the run: the record holds no pause
	// reason for it, and its fence, if any, is down.
	if m.Trigger != "" && (m.RollbackStatus == contract.StatusFailed || m.RollbackStatus == contract.StatusCancelled) &&
		m.EndedAt.IsZero() && m.AbortSentAt.IsZero() {
		out = append(out, "rollback "+m.RollbackStatus+" (see Alerts)")
	}
	if fence != nil && !slices.Contains(out, contract.PauseFencePrefix+fence.OpID) {
		out = append(out, "fence of "+fence.OpID)
	}
	if len(out) == 0 {
		return "-"
	}
	return strings.Join(out, ",")
}

// fenceOf is the write fence raised on tenant/database, nil when none.
func fenceOf(fences []contract.Fence, tenant, database string) *contract.Fence {
	for i := range fences {
		if fences[i].Tenant == tenant && fences[i].Database == database {
			return &fences[i]
		}
	}
	return nil
}

func progressText(p *contract.Progress) string {
	if p == nil {
		return "-"
	}
	out := strings.TrimSpace(p.Phase + " " + p.Collection)
	if p.TotalRecords > 0 {
		out += fmt.Sprintf(" %d/%d records (%.0f%%)", p.DoneRecords, p.TotalRecords, 100*float64(p.DoneRecords)/float64(p.TotalRecords))
	} else if p.DoneRecords > 0 {
		out += fmt.Sprintf(" %d records", p.DoneRecords)
	}
	if p.RatePerSec > 0 {
		out += fmt.Sprintf(", %.0f/s", p.RatePerSec)
	}
	if p.ETASeconds > 0 {
		out += fmt.Sprintf(", ETA %s", (time.Duration(p.ETASeconds * float64(time.Second))).Round(time.Second))
	}
	return strings.TrimSpace(out)
}
