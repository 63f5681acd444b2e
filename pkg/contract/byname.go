package contract

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// SnapshotByName picks the snapshot a name stands for among ms: of the
// snapshots so named (of tenant/database when given), the newest, the one
// whose data was taken last (TakenAt), so an old archive imported today
// under the same name does not stand for it; ties go to the one made last,
// then to the greater id. It returns nil when none is so named.
//
// A name is not unique. Without tenant and database, a name used by
// snapshots of more than one tenant/database is an error that lists them:
// a rollback by name must not restore another database than the one its
// caller had in mind.
func SnapshotByName(ms []SnapshotManifest, name, tenant, database string) (*SnapshotManifest, error) {
	var best *SnapshotManifest
	dbs := map[string][]string{} // "tenant/database" -> snapshot ids
	for i := range ms {
		m := &ms[i]
		if m.Name != name || (tenant != "" && m.Tenant != tenant) || (database != "" && m.Database != database) {
			continue
		}
		k := m.Tenant + "/" + m.Database
		dbs[k] = append(dbs[k], m.SnapshotID)
		if best == nil || newerSnapshot(m, best) {
			best = m
		}
	}
	if len(dbs) > 1 {
		var parts []string
		for _, k := range slices.Sorted(maps.Keys(dbs)) {
			ids := dbs[k]
			slices.Sort(ids)
			parts = append(parts, fmt.Sprintf("%s (%s)", k, strings.Join(ids, ", ")))
		}
		return nil, fmt.Errorf("snapshot name %q is used by snapshots of more than one tenant/database: %s; give the snapshot id",
			name, strings.Join(parts, "; "))
	}
	return best, nil
}

// newerSnapshot says a was taken after b (TakenAt), or at the same time but
// made later, or made at the same time with the greater id.
func newerSnapshot(a, b *SnapshotManifest) bool {
	if at, bt := a.TakenAt(), b.TakenAt(); !at.Equal(bt) {
		return at.After(bt)
	}
	if !a.StartedAt.Equal(b.StartedAt) {
		return a.StartedAt.After(b.StartedAt)
	}
	return a.SnapshotID > b.SnapshotID
}
