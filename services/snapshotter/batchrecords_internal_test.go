package snapshotter

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/archive"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
)

// TestBatchRecordsCutLongIDs: the manifest keeps at most
// contract.MaxBatchRecordID bytes of a batch's first and last id, cut on a
// character boundary and marked, so that long ids cannot make the manifest
// too large for its KV value; shorter ids are kept whole.
func TestBatchRecordsCutLongIDs(t *testing.T) {
	long := strings.Repeat("x", contract.MaxBatchRecordID+44)
	euros := strings.Repeat("€", 100) // 3 bytes each: 256 falls inside one
	exact := strings.Repeat("y", contract.MaxBatchRecordID)
	got := batchRecords([]archive.BatchRecords{
		{Count: 7, FirstID: "doc-1", LastID: "doc-7"},
		{Count: 3, FirstID: long, LastID: "short"},
		{Count: 1, FirstID: exact, LastID: euros},
	})
	want := []contract.BatchRecords{
		{Count: 7, First: "doc-1", Last: "doc-7"},
		{Count: 3, First: long[:contract.MaxBatchRecordID] + "…", Last: "short", Cut: true},
		{Count: 1, First: exact, Last: strings.Repeat("€", contract.MaxBatchRecordID/3) + "…", Cut: true},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d batches, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("batch %d: got %+v, want %+v", i, got[i], want[i])
		}
		if !utf8.ValidString(got[i].First) || !utf8.ValidString(got[i].Last) {
			t.Errorf("batch %d: an id cut inside a character: %q, %q", i, got[i].First, got[i].Last)
		}
	}
	if batchRecords(nil) != nil {
		t.Error("a collection without batches got batch records")
	}
}
