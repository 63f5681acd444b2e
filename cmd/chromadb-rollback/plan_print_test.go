package main

import (
	"bytes"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
)

// TestPrintPlanEmpty: a plan with no collection says so instead of
// printing a table header with nothing under it.
func TestPrintPlanEmpty(t *testing.T) {
	plan := &contract.RollbackPlan{SnapshotID: "snap_x", SnapshotName: "empty", Mode: "full", ArchiveVerified: true,
		Tenant: "t", Database: "d", SourceTenant: "t", SourceDatabase: "d",
		AddRate: 1000, SecondsPerCollection: 0.05, SecondsPerCollectionAssumed: true}
	var out bytes.Buffer
	(&app{stdout: &out}).printPlan(plan)
	if s := out.String(); !strings.Contains(s, "No collections: the snapshot holds none and the target database has none.") || strings.Contains(s, "COLLECTION") {
		t.Errorf("empty plan printed:\n%s", s)
	}
	// Nothing written: no cost of "each of 0 collections".
	if want := "Records to write: 0; estimated time 0s at 1000 records/s (assumed: nothing was restored into this Chroma yet)\n"; !strings.Contains(out.String(), want) {
		t.Errorf("empty plan printed:\n%s\nwant the line %q", out.String(), want)
	}

	plan.Items = []contract.PlanItem{{Collection: "docs", Target: "docs", Action: "replace", SnapshotRecords: 3, CurrentRecords: 2, WriteRecords: 3}}
	out.Reset()
	(&app{stdout: &out}).printPlan(plan)
	if s := out.String(); strings.Contains(s, "No collections") || !strings.Contains(s, "COLLECTION") || !strings.Contains(s, "docs") {
		t.Errorf("plan of one collection printed:\n%s", s)
	}

	// The report of such a rollback says the same.
	op := &contract.Operation{OpID: "op_x", Status: contract.StatusCompleted, Restore: &contract.RestoreReport{Verified: true}}
	out.Reset()
	(&app{stdout: &out}).printOperation(op)
	if s := out.String(); !strings.Contains(s, "No collections: the snapshot holds none") || strings.Contains(s, "COLLECTION") || !strings.Contains(s, "verified: true") {
		t.Errorf("report of an empty rollback printed:\n%s", s)
	}
}

// TestPlanBatches: a batch-level plan shows each named batch's records; the
// plan of a restorer that did not count them shows the names alone.
// TestCLIBatchInfo checks both against the running system.
func TestPlanBatches(t *testing.T) {
	for _, c := range []struct {
		it   contract.PlanItem
		want string
	}{
		{contract.PlanItem{Batches: []string{"batch_000001", "batch_000007"}, BatchCounts: []int64{2458, 12}}, "batch_000001 (2458), batch_000007 (12)"},
		{contract.PlanItem{Batches: []string{"batch_000001", "batch_000007"}}, "batch_000001,batch_000007"},
		{contract.PlanItem{}, ""},
	} {
		if got := planBatches(&c.it); got != c.want {
			t.Errorf("planBatches(%+v) = %q, want %q", c.it, got, c.want)
		}
	}
}

// TestShortID: record ids in snapshot info's batch tables fit a column and
// stay on one line; --json has them whole.
func TestShortID(t *testing.T) {
	for _, c := range []struct{ id, want string }{
		{"doc-01", "doc-01"},
		{"", `""`},
		{"exactly-24-characters-xx", "exactly-24-characters-xx"},
		{"https://example.com/handbook/chapter-01/section-03#chunk-0001", "https://exam…#chunk-0001"},
		{"日本語の文書-0001-日本語の文書-0002-日本語の文書-0003", "日本語の文書…の文書-0003"}, // 24 columns, as the others
		{"line\nbreak", `"line\nbreak"`},
		{"nul\x00" + strings.Repeat("x", 30), `"nul\x00xxxx…xxxxxxxxxx"`},
	} {
		if got := shortID(c.id); got != c.want {
			t.Errorf("shortID(%q) = %q, want %q", c.id, got, c.want)
		}
	}
}

// TestCounted: counts in messages agree with their nouns.
func TestCounted(t *testing.T) {
	for _, c := range []struct {
		got, want string
	}{
		{counted(0, "record"), "0 records"},
		{counted(1, "collection"), "1 collection"},
		{counted(int64(2), "collection"), "2 collections"},
		{counted(int64(9832), "record"), "9832 records"},
	} {
		if c.got != c.want {
			t.Errorf("counted: %q, want %q", c.got, c.want)
		}
	}
}

// TestImportedText: snapshot info says where an import came from and when
// its original was taken, or why it is dated by its import.
func TestImportedText(t *testing.T) {
	started := time.Date(2026, 11, 28, 2, 0, 0, 0, time.UTC)
	before, after := started.Add(-48*time.Hour), started.Add(time.Hour)
	origin := func(at *time.Time) *contract.SnapshotManifest {
		return &contract.SnapshotManifest{StartedAt: started, ImportedFrom: &contract.ImportOrigin{
			File: "old.tar.gz", Format: "seed", SHA256: strings.Repeat("ab", 32), SourceName: "pre", SourceCreatedAt: at}}
	}
	for _, c := range []struct {
		m    *contract.SnapshotManifest
		want string
	}{
		{origin(&before), `old.tar.gz (seed format, sha256 abababababababab); original "pre", taken 2026-11-26T02:00:00Z`},
		{origin(nil), `old.tar.gz (seed format, sha256 abababababababab); original "pre", taken at an unknown time (dated by its import)`},
		{origin(&after), `old.tar.gz (seed format, sha256 abababababababab); original "pre", dated 2026-11-28T03:00:00Z, after its import (dated by its import)`},
	} {
		if got := importedText(c.m); got != c.want {
			t.Errorf("importedText:\n got %s\nwant %s", got, c.want)
		}
	}
}

// TestRollbackOutcome: the exit code of a rollback that ended. Only an
// archive or restored data that did not verify exits 3; a rollback that
// Chroma's outage stopped half-way exits 1, though its report lists
// collections not verified.
func TestRollbackOutcome(t *testing.T) {
	halfway := &contract.RestoreReport{Collections: []contract.RestoreCollectionReport{
		{Collection: "a", Verified: true}, {Collection: "b"},
	}}
	for _, tc := range []struct {
		name string
		op   contract.Operation
		code int // 0: no error
		says string
	}{
		{"completed", contract.Operation{Status: contract.StatusCompleted, Restore: &contract.RestoreReport{Verified: true}}, 0, ""},
		{"did not verify", contract.Operation{Status: contract.StatusFailed, FailureReason: "verification", Restore: halfway,
			Error: `restored data does not match the snapshot: collection "b", batch 0: record "x" is missing`}, exitVerification, `did not verify: restored data`},
		{"archive damaged", contract.Operation{Status: contract.StatusFailed, FailureReason: "verification",
			Error: "archive failed verification"}, exitVerification, "did not verify: archive failed"},
		{"chroma outage", contract.Operation{Status: contract.StatusFailed, FailureReason: "chroma", Restore: halfway,
			Error: "write add batch 3 of collection \"b\": connection refused"}, 1, "failed: write add batch 3"},
		{"no reason recorded", contract.Operation{Status: contract.StatusFailed, Restore: halfway, Error: "boom"}, 1, "failed: boom"},
		{"cancelled", contract.Operation{Status: contract.StatusCancelled, FailureReason: "cancelled", Restore: halfway, Error: "cancelled by ops"}, 1, "was cancelled: cancelled by ops"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.op.OpID = "op_1"
			err := rollbackOutcome(&tc.op)
			if tc.code == 0 {
				if err != nil {
					t.Fatalf("outcome %v, want none", err)
				}
				return
			}
			code := 1
			if ee, ok := err.(*exitError); ok {
				code = ee.code
			}
			if err == nil || code != tc.code || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("outcome %v (exit %d); want exit %d saying %q", err, code, tc.code, tc.says)
			}
		})
	}
}

// TestLossWarning: the prompt warns, as the seed tool did, of what a
// rollback overwrites and whether anything keeps it.
func TestLossWarning(t *testing.T) {
	items := func(actions ...string) []contract.PlanItem {
		var out []contract.PlanItem
		for i, a := range actions {
			out = append(out, contract.PlanItem{Target: fmt.Sprintf("c%d", i), Action: a})
		}
		return out
	}
	for _, tc := range []struct {
		name string
		plan contract.RollbackPlan
		want []string
	}{
		{"creates only", contract.RollbackPlan{Items: items(contract.PlanCreate, contract.PlanExtra), SafetySnapshot: true},
			[]string{"CRITICAL: this will RESTORE t/d from snapshot snap_1 (pre)"}},
		{"replaces and drops", contract.RollbackPlan{Items: items(contract.PlanReplace, contract.PlanReplace, contract.PlanDrop, contract.PlanUntouched), SafetySnapshot: true},
			[]string{"CRITICAL: this will RESTORE t/d from snapshot snap_1 (pre)",
				"2 collections replaced, 1 collection deleted: everything written to them since the snapshot will be LOST; the safety snapshot taken first keeps it"}},
		{"batches, no safety snapshot", contract.RollbackPlan{Items: items(contract.PlanUpsert, contract.PlanUntouched)},
			[]string{"CRITICAL: this will RESTORE t/d from snapshot snap_1 (pre)",
				"the named batches of 1 collection overwritten: everything written to them since the snapshot will be LOST; nothing keeps it (--no-safety-snapshot)"}},
		// Into another Chroma the prompt names the server: t/d alone reads
		// as the configured Chroma's database of that name.
		{"another Chroma", contract.RollbackPlan{Items: items(contract.PlanReplace), ChromaURL: "http://chroma-b:8000"},
			[]string{"CRITICAL: this will RESTORE t/d on http://chroma-b:8000 from snapshot snap_1 (pre)",
				"1 collection replaced: everything written to them since the snapshot will be LOST; nothing keeps it (--no-safety-snapshot)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.plan
			p.SnapshotID, p.SnapshotName, p.Tenant, p.Database = "snap_1", "pre", "t", "d"
			if got := lossWarning(&p); !slices.Equal(got, tc.want) {
				t.Errorf("warning\n%q\nwant\n%q", got, tc.want)
			}
		})
	}
}

// TestPlanEstimateLine: the estimate says what it assumes, with the cost
// of each collection when restores measured one.
func TestPlanEstimateLine(t *testing.T) {
	plan := &contract.RollbackPlan{Items: []contract.PlanItem{{Collection: "docs", Target: "docs", Action: "replace", WriteRecords: 3000}},
		WriteRecords: 3000, WriteCollections: 300, AddRate: 1261, SecondsPerCollection: 0.072, EstimatedSeconds: 23.98, AddRateMeasured: true}
	var out bytes.Buffer
	(&app{stdout: &out}).printPlan(plan)
	if want := "Records to write: 3000; estimated time 24s at 1261 records/s and 72ms for each of 300 collections (measured)\n"; !strings.Contains(out.String(), want) {
		t.Errorf("plan printed:\n%s\nwant the line %q", out.String(), want)
	}
	// Measured by restores of one shape: the cost of a collection is not.
	plan.SecondsPerCollection, plan.SecondsPerCollectionAssumed, plan.AddRate, plan.EstimatedSeconds = 0.024, true, 8333, 7.56
	out.Reset()
	(&app{stdout: &out}).printPlan(plan)
	if want := "Records to write: 3000; estimated time 8s at 8333 records/s and 24ms for each of 300 collections (measured; the time for each collection assumed until restores of other shapes measure it)\n"; !strings.Contains(out.String(), want) {
		t.Errorf("plan printed:\n%s\nwant the line %q", out.String(), want)
	}
	plan.WriteRecords, plan.WriteCollections, plan.EstimatedSeconds = 35, 1, 0.028
	out.Reset()
	(&app{stdout: &out}).printPlan(plan)
	if want := "Records to write: 35; estimated time 28ms at 8333 records/s and 24ms for its one collection (measured; the time for each collection assumed until restores of other shapes measure it)\n"; !strings.Contains(out.String(), want) {
		t.Errorf("plan printed:\n%s\nwant the line %q", out.String(), want)
	}
	plan.WriteRecords, plan.WriteCollections = 3000, 300
	plan.SecondsPerCollection, plan.AddRateMeasured, plan.AddRate, plan.EstimatedSeconds = 0.05, false, 1000, 18
	out.Reset()
	(&app{stdout: &out}).printPlan(plan)
	if want := "Records to write: 3000; estimated time 18s at 1000 records/s and 50ms for each of 300 collections (assumed: nothing was restored into this Chroma yet)\n"; !strings.Contains(out.String(), want) {
		t.Errorf("plan printed:\n%s\nwant the line %q", out.String(), want)
	}
}

// TestPrintPlanModes: the plan's header says how it writes; a batch-level
// rollback always upserts into the live collections, never stages.
func TestPrintPlanModes(t *testing.T) {
	for _, tc := range []struct {
		mode    string
		inPlace bool
		want    string
	}{
		{"full", false, "[full, stage and swap, safety snapshot first]"},
		{"partial", true, "[partial, in place, safety snapshot first]"},
		{"batches", false, "[batches, upsert into the live collections, safety snapshot first]"},
	} {
		plan := &contract.RollbackPlan{SnapshotID: "snap_x", SnapshotName: "pre", Mode: tc.mode, InPlace: tc.inPlace, SafetySnapshot: true,
			Tenant: "t", Database: "d", SourceTenant: "t", SourceDatabase: "d", AddRate: 1000}
		var out bytes.Buffer
		(&app{stdout: &out}).printPlan(plan)
		if !strings.Contains(out.String(), "-> t/d "+tc.want+"\n") {
			t.Errorf("%s plan (in place %v) printed:\n%s\nwant the header to end %q", tc.mode, tc.inPlace, out.String(), tc.want)
		}
	}
}

// TestPrintCancelledReport: the report of a rollback that did not complete
// neither promises that its safety snapshot undoes it all nor names an
// embedding check for a collection it stopped before checking.
func TestPrintCancelledReport(t *testing.T) {
	report := func(status string, checked bool) string {
		c := contract.RestoreCollectionReport{Collection: "big1", Target: "big1", Action: "replace", Records: 2400}
		if checked {
			c.Verified, c.EmbeddingCheck = true, "bit-exact"
		}
		op := &contract.Operation{OpID: "op_x", Status: status, Restore: &contract.RestoreReport{SafetySnapshotID: "snap_safe",
			Collections: []contract.RestoreCollectionReport{c}, RecordsWritten: 2400, Verified: checked}}
		var out bytes.Buffer
		(&app{stdout: &out}).printOperation(op)
		return out.String()
	}
	if s := report(contract.StatusCompleted, true); !strings.Contains(s, "Safety snapshot: snap_safe (roll back to it to undo this rollback)\n") ||
		!regexp.MustCompile(`big1\s+big1\s+replace\s+2400\s+true\s+bit-exact\n`).MatchString(s) {
		t.Errorf("completed rollback's report:\n%s", s)
	}
	if s := report(contract.StatusCancelled, false); strings.Contains(s, "undo this rollback") || strings.Contains(s, "bit-exact") ||
		!strings.Contains(s, "Safety snapshot: snap_safe (the state before this rollback: roll back to it to undo what it changed)\n") ||
		!regexp.MustCompile(`big1\s+big1\s+replace\s+2400\s+false\s+not checked\n`).MatchString(s) {
		t.Errorf("cancelled rollback's report:\n%s", s)
	}
	// A redelivered rollback cancelled before it read the snapshot names no
	// collection: that is not a snapshot that holds none.
	op := &contract.Operation{OpID: "op_x", Status: contract.StatusCancelled, Restore: &contract.RestoreReport{RecordsWritten: 2400}}
	var out bytes.Buffer
	(&app{stdout: &out}).printOperation(op)
	if s := out.String(); strings.Contains(s, "No collections") || !strings.Contains(s, "Records written: 2400") {
		t.Errorf("report of a rollback cancelled before it read the snapshot:\n%s", s)
	}
}

// TestPrintPartlyRestored: a cancelled or failed in-place rollback says
// plainly which collection it left half restored, and how to finish or
// undo it; a staged one, whose live collections were never touched, and a
// completed one do not.
func TestPrintPartlyRestored(t *testing.T) {
	op := func(status string, inPlace bool) *contract.Operation {
		return &contract.Operation{OpID: "op_x", Status: status,
			Plan: &contract.RollbackPlan{InPlace: inPlace, Items: []contract.PlanItem{
				{Collection: "big", Target: "big", Action: contract.PlanReplace, SnapshotRecords: 40000},
				{Collection: "small", Target: "small", Action: contract.PlanReplace, SnapshotRecords: 10},
			}},
			Restore: &contract.RestoreReport{SafetySnapshotID: "snap_safe", Collections: []contract.RestoreCollectionReport{
				{Collection: "small", Target: "small", Action: contract.PlanReplace, Records: 10, Verified: true, EmbeddingCheck: "bit-exact"},
				{Collection: "big", Target: "big", Action: contract.PlanReplace, Records: 12500},
			}}}
	}
	show := func(o *contract.Operation) string {
		var out bytes.Buffer
		(&app{stdout: &out}).printOperation(o)
		return out.String()
	}
	want := `warning: "big" was restored in place and is left partly restored (12500 of the snapshot's 40000 records written): ` +
		"roll back to the same snapshot again to finish it, or to the safety snapshot snap_safe to undo what this rollback changed\n"
	for _, status := range []string{contract.StatusCancelled, contract.StatusFailed} {
		if s := show(op(status, true)); !strings.Contains(s, want) || strings.Contains(s, `"small" was restored`) {
			t.Errorf("%s in-place rollback:\n%s\nwant %q, and nothing of small", status, s, want)
		}
	}
	if s := show(op(contract.StatusCancelled, false)); strings.Contains(s, "partly restored") {
		t.Errorf("cancelled staged rollback:\n%s", s)
	}
	done := op(contract.StatusCompleted, true)
	done.Restore.Collections[1].Records, done.Restore.Collections[1].Verified = 40000, true
	if s := show(done); strings.Contains(s, "partly restored") {
		t.Errorf("completed in-place rollback:\n%s", s)
	}
}

// TestProvenance: snapshot info says what a snapshot holds of its
// database, who took it and why.
func TestProvenance(t *testing.T) {
	m := &contract.SnapshotManifest{Partial: true, Actor: "restorer", Reason: "safety snapshot before rollback op_1 to snapshot snap_0"}
	want := [][2]string{{"holds", "only the collections below (partial)"}, {"taken by", "restorer"}, {"reason", m.Reason}}
	if got := provenance(m); !slices.Equal(got, want) {
		t.Errorf("provenance %q, want %q", got, want)
	}
	if got := provenance(&contract.SnapshotManifest{}); !slices.Equal(got, [][2]string{{"holds", "the whole database"}}) {
		t.Errorf("provenance of a whole-database snapshot without actor or reason: %q", got)
	}
}

// TestPrintReportWarnings: the report of a rollback whose cleanup failed
// (Chroma was down when it stopped) names the staging collection it left,
// as the operation record does; the plan's warnings, which the plan
// printed already, are not repeated. A rollback given up on has no report
// and still says what its cleanup left.
func TestPrintReportWarnings(t *testing.T) {
	planned := `1 collection in acme/prod is not in the snapshot and is kept: "extra"`
	left := `cleanup failed: chroma: get collection "big.data": connection refused; "big.data" in acme/prod holds what it held before unless it is missing and "big.data__old_dbfe7370" exists (rename that back); delete the staging collection "big.data__rb_dbfe7370" if it is left`
	op := &contract.Operation{OpID: "op_x", Status: contract.StatusFailed, Error: "write stage batch 12: connection refused",
		Plan: &contract.RollbackPlan{Warnings: []string{planned}}, Warnings: []string{planned, left},
		Restore: &contract.RestoreReport{Collections: []contract.RestoreCollectionReport{{Collection: "big.data", Target: "big.data", Action: "replace", Records: 30000}}}}
	var out bytes.Buffer
	(&app{stdout: &out}).printOperation(op)
	if s := out.String(); !strings.Contains(s, "warning: "+left+"\n") || strings.Contains(s, planned) {
		t.Errorf("failed rollback's report:\n%s\nwant the warning %q and not the plan's", s, left)
	}

	op.Restore = nil
	out.Reset()
	(&app{stdout: &out}).printOperation(op)
	if s := out.String(); !strings.Contains(s, "warning: "+left+"\n") || strings.Contains(s, "taken back") {
		t.Errorf("given-up rollback's report:\n%s\nwant the warning %q", s, left)
	}

	// Once the restorer took the leftovers back, the report says when and
	// what became of them.
	at := time.Date(2026, 11, 29, 14, 30, 0, 0, time.UTC)
	note := `"big.data" holds what it held before this rollback; staging collection "big.data__rb_dbfe7370" deleted`
	op.LeftoversCleared, op.LeftoverNotes = &at, []string{note}
	out.Reset()
	(&app{stdout: &out}).printOperation(op)
	if s := out.String(); !strings.Contains(s, "Leftovers taken back at 2026-11-29T14:30:00Z") || !strings.Contains(s, "  "+note+"\n") {
		t.Errorf("report once the leftovers were taken back:\n%s", s)
	}
}

// TestPrintPlanManyUntouched: the plan of a partial rollback of 2 of a
// database's 250 collections printed 250 rows in the snapshot's order (by
// collection id), the 2 it changes somewhere among 248 "untouched". It
// lists what it changes first and counts the untouched collections in one
// line when there are more than a few; a few are listed after the others.
func TestPrintPlanManyUntouched(t *testing.T) {
	plan := &contract.RollbackPlan{SnapshotID: "snap_x", SnapshotName: "many", Mode: "partial", ArchiveVerified: true,
		Tenant: "t", Database: "d", SourceTenant: "t", SourceDatabase: "d", AddRate: 1000, AddRateMeasured: true}
	items := func(n int) []contract.PlanItem {
		var out []contract.PlanItem
		for i := range n {
			name := fmt.Sprintf("c%04d", i)
			it := contract.PlanItem{Collection: name, Target: name, Action: contract.PlanUntouched, SnapshotRecords: 10, CurrentRecords: 10}
			if i == n/2 || i == n-1 {
				it.Action, it.CurrentRecords, it.WriteRecords = contract.PlanReplace, 7, 10
			}
			out = append(out, it)
		}
		return out
	}
	plan.Items = items(250)
	var out bytes.Buffer
	(&app{stdout: &out}).printPlan(plan)
	lines := strings.Split(out.String(), "\n")
	if len(lines) < 6 || !strings.HasPrefix(lines[2], "  COLLECTION") ||
		!strings.HasPrefix(lines[3], "  c0125 ") || !strings.Contains(lines[3], "replace") ||
		!strings.HasPrefix(lines[4], "  c0249 ") || !strings.Contains(lines[4], "replace") ||
		lines[5] != "  and 248 other collections untouched (--json lists them)" {
		t.Errorf("plan of 2 of 250 collections printed:\n%s", out.String())
	}
	if n := strings.Count(out.String(), "untouched"); n != 1 {
		t.Errorf("plan of 2 of 250 collections says untouched %d times:\n%s", n, out.String())
	}

	plan.Items = items(6)
	out.Reset()
	(&app{stdout: &out}).printPlan(plan)
	lines = strings.Split(out.String(), "\n")
	if len(lines) < 9 || !strings.Contains(lines[3], "replace") || !strings.Contains(lines[4], "replace") ||
		!strings.Contains(lines[5], "untouched") || !strings.Contains(lines[8], "untouched") || strings.Contains(out.String(), "other collections") {
		t.Errorf("plan of 2 of 6 collections printed:\n%s", out.String())
	}
}
