package restorer

import (
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
