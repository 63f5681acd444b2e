package contract_test

import (
	"strings"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
)

// TestSnapshotByName: a name stands for the snapshot of that name taken
// last, not the one made last (an old archive imported today), and a name
// used in two databases is refused unless the database is given.
func TestSnapshotByName(t *testing.T) {
	t0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	old := t0.Add(-30 * 24 * time.Hour)
	snap := func(id, name, db string, started time.Time, taken *time.Time) contract.SnapshotManifest {
		m := contract.SnapshotManifest{SnapshotID: id, Name: name, Tenant: "acme", Database: db, StartedAt: started}
		if taken != nil {
			m.ImportedFrom = &contract.ImportOrigin{SourceCreatedAt: taken}
		}
		return m
	}
	ms := []contract.SnapshotManifest{
		snap("snap_a", "before", "prod", t0, nil),
		snap("snap_b", "before", "prod", t0.Add(time.Hour), &old), // imported an hour later, taken a month before
		snap("snap_c", "before", "prod", t0.Add(-time.Hour), nil),
		snap("snap_d", "other", "prod", t0.Add(2*time.Hour), nil),
		snap("snap_e", "shared", "prod", t0, nil),
		snap("snap_f", "shared", "staging", t0.Add(time.Hour), nil),
		snap("snap_h", "tie", "prod", t0, nil),
		snap("snap_g", "tie", "prod", t0, nil),
	}
	for _, c := range []struct {
		name, db, want, err string
	}{
		{"before", "", "snap_a", ""},
		{"before", "prod", "snap_a", ""},
		{"before", "staging", "", ""},
		{"missing", "", "", ""},
		{"shared", "", "", `snapshot name "shared" is used by snapshots of more than one tenant/database: acme/prod (snap_e); acme/staging (snap_f); give the snapshot id`},
		{"shared", "prod", "snap_e", ""},
		{"shared", "staging", "snap_f", ""},
		{"tie", "", "snap_h", ""},
	} {
		tenant := ""
		if c.db != "" {
			tenant = "acme"
		}
		m, err := contract.SnapshotByName(ms, c.name, tenant, c.db)
		got := ""
		if m != nil {
			got = m.SnapshotID
		}
		if got != c.want || (err == nil) != (c.err == "") || (err != nil && err.Error() != c.err) {
			t.Errorf("%q in %q: got %q, %v; want %q, %q", c.name, c.db, got, err, c.want, c.err)
		}
	}
	if _, err := contract.SnapshotByName(ms, "shared", "", ""); err == nil || !strings.Contains(err.Error(), "give the snapshot id") {
		t.Errorf("ambiguous name: %v", err)
	}
}
