package contract_test

import (
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
)

// TestTakenAt: a snapshot's data was taken when it started, unless it is
// an import that says when its original was, before its import.
func TestTakenAt(t *testing.T) {
	started := time.Date(2026, 11, 28, 1, 0, 0, 0, time.UTC)
	source := started.Add(-60 * 24 * time.Hour)
	var zero time.Time
	future := started.Add(5 * 365 * 24 * time.Hour)
	for _, c := range []struct {
		name   string
		origin *contract.ImportOrigin
		want   time.Time
	}{
		{"made here", nil, started},
		{"imported, original's time known", &contract.ImportOrigin{SourceCreatedAt: &source}, source},
		{"imported, original's time unknown", &contract.ImportOrigin{}, started},
		{"imported, original's time zero", &contract.ImportOrigin{SourceCreatedAt: &zero}, started},
		// An original dated after its import was misdated: a future
		// date would make it the newest snapshot for years.
		{"imported, original dated after the import", &contract.ImportOrigin{SourceCreatedAt: &future}, started},
	} {
		m := contract.SnapshotManifest{StartedAt: started, ImportedFrom: c.origin}
		if got := m.TakenAt(); !got.Equal(c.want) {
			t.Errorf("%s: TakenAt %s, want %s", c.name, got, c.want)
		}
	}
}
