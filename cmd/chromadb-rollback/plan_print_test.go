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
