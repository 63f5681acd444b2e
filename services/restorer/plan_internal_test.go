package restorer

import (
	"strings"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
)

// TestFreshPlan: a job carries out the plan its op was started with only
// when that plan is recent and for the snapshot and target it resolves.
func TestFreshPlan(t *testing.T) {
	sp := &spec{m: &contract.SnapshotManifest{SnapshotID: "snap_1"}, tenant: "acme", database: "prod", mode: modePartial}
	for _, tc := range []struct {
		name   string
		change func(p *contract.RollbackPlan)
		reused bool
	}{
		{"just made", func(*contract.RollbackPlan) {}, true},
		{"too old", func(p *contract.RollbackPlan) { p.Time = time.Now().Add(-planReuseAge - time.Second) }, false},
		{"from the future", func(p *contract.RollbackPlan) { p.Time = time.Now().Add(time.Minute) }, false},
		{"other snapshot", func(p *contract.RollbackPlan) { p.SnapshotID = "snap_2" }, false},
		{"other database", func(p *contract.RollbackPlan) { p.Database = "staging" }, false},
		{"other mode", func(p *contract.RollbackPlan) { p.Mode = modeFull }, false},
	} {
		p := &contract.RollbackPlan{Envelope: contract.NewEnvelope(contract.TypeRollbackPlan), SnapshotID: "snap_1", Tenant: "acme", Database: "prod", Mode: modePartial}
		tc.change(p)
		j := &job{op: contract.Operation{Plan: p}}
		if got := j.freshPlan(sp); (got != nil) != tc.reused {
			t.Errorf("%s: plan reused = %v, want %v", tc.name, got != nil, tc.reused)
		}
	}
	if (&job{op: contract.Operation{}}).freshPlan(sp) != nil {
		t.Error("an op without a plan: a plan reused")
	}
}

// TestWorkName: staging and displaced names are valid Chroma names for
// every valid target, the same on every delivery of a command, and
// different for different targets, even targets too long to keep whole.
func TestWorkName(t *testing.T) {
	const op = "op_20251130T143022Z_0123456789ab"
	if got, want := workName("corpus.v1", stagingSep, op), "corpus.v1"+stagingSep+shortID(op); got != want {
		t.Errorf("workName = %q, want %q", got, want)
	}
	long := strings.Repeat("a", 500)
	targets := []string{"abc", long + "_x", long + "_y", long + "-" + strings.Repeat("b", 11), strings.Repeat("c", 512)}
	seen := map[string]string{}
	for _, target := range targets {
		if err := validCollectionName(target); err != nil {
			t.Fatalf("fixture: %v", err)
		}
		for _, sep := range []string{stagingSep, oldSep} {
			name := workName(target, sep, op)
			if err := validCollectionName(name); err != nil {
				t.Errorf("%s name of a %d-character target: %v", sep, len(target), err)
			}
			if name != workName(target, sep, op) {
				t.Errorf("%s name of %.20q... differs between calls", sep, target)
			}
			if other, ok := seen[name]; ok {
				t.Errorf("%.20q... and %.20q... both get %.30q...", target, other, name)
			}
			seen[name] = target
		}
	}
}
