package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
)

// TestPrintPlanEmpty: a plan with no collection says so instead of
// printing a table header with nothing under it.
func TestPrintPlanEmpty(t *testing.T) {
	plan := &contract.RollbackPlan{SnapshotID: "snap_x", SnapshotName: "empty", Mode: "full", ArchiveVerified: true,
		Tenant: "t", Database: "d", SourceTenant: "t", SourceDatabase: "d"}
	var out bytes.Buffer
	(&app{stdout: &out}).printPlan(plan)
	if s := out.String(); !strings.Contains(s, "No collections: the snapshot holds none and the target database has none.") || strings.Contains(s, "COLLECTION") {
		t.Errorf("empty plan printed:\n%s", s)
	}

	plan.Items = []contract.PlanItem{{Collection: "docs", Target: "docs", Action: "replace", SnapshotRecords: 3, CurrentRecords: 2, WriteRecords: 3}}
	out.Reset()
	(&app{stdout: &out}).printPlan(plan)
	if s := out.String(); strings.Contains(s, "No collections") || !strings.Contains(s, "COLLECTION") || !strings.Contains(s, "docs") {
		t.Errorf("plan of one collection printed:\n%s", s)
	}
}
