package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
	"github.com/chromadb-rollback/chromadb-rollback/services/snapshotter"
)

// TestCLIListManySnapshotsOfManyCollections: 120 snapshots of a database
// of 250 collections are 8.5 MB of manifests, more than one NATS message
// carries; `snapshot list` waited 30 s and failed "busy or stuck". It
// lists them all, newest first, in text and in --json, from the pages the
// snapshotter answers.
func TestCLIListManySnapshotsOfManyCollections(t *testing.T) {
	ch := testenv.StartChroma(t)
	cc := ch.Client(t)
	if err := testenv.SeedWorkload(t.Context(), cc, tTenant, tDB, 1, 4, 4, 16); err != nil {
		t.Fatal(err)
	}
	n := testenv.StartNATS(t)
	c := startSnapshotter(t, n, snapshotter.Config{ChromaURL: ch.URL}, cc)
	real := c.createSnapshot("real")

	// Copies of it as a database of 1,500 collections would have them.
	const copies = 25
	start := time.Now().UTC().Add(-time.Hour)
	want := []string{real.SnapshotID}
	for i := copies - 1; i >= 0; i-- {
		m := real
		m.SnapshotID = fmt.Sprintf("snap_20261129T000000Z_%012d", i)
		m.Name = fmt.Sprintf("copy%d", i)
		m.StartedAt = start.Add(time.Duration(i) * time.Second)
		m.Collections = nil
		for k := range 1500 {
			cs := real.Collections[0]
			cs.Name = fmt.Sprintf("collection_%05d", k)
			cs.ID = fmt.Sprintf("00000000-0000-0000-0000-%012d", k)
			m.Collections = append(m.Collections, cs)
		}
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := n.Assets.Manifests.Put(t.Context(), m.SnapshotID, b); err != nil {
			t.Fatal(err)
		}
		want = append(want, m.SnapshotID)
	}

	code, stdout, stderr := c.run("snapshot", "list")
	if code != exitOK {
		t.Fatalf("snapshot list: exit %d\n%s%s", code, stdout, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if len(lines) != len(want)+1 {
		t.Errorf("snapshot list printed %d lines, want a header and %d snapshots:\n%s", len(lines), len(want), stdout)
	}
	for i, id := range want {
		if i+1 < len(lines) && !strings.HasPrefix(lines[i+1], id+" ") {
			t.Errorf("line %d: %q, want snapshot %s", i+1, lines[i+1], id)
		}
	}
	code, stdout, stderr = c.run("snapshot", "list", "--json")
	var list contract.SnapshotList
	if err := json.Unmarshal([]byte(stdout), &list); code != exitOK || err != nil {
		t.Fatalf("snapshot list --json: exit %d, %v\n%.500s%s", code, err, stdout, stderr)
	}
	var got []string
	for _, m := range list.Snapshots {
		got = append(got, m.SnapshotID)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) || list.More {
		t.Errorf("snapshot list --json: more %v, ids\n%v\nwant\n%v", list.More, got, want)
	}
}
