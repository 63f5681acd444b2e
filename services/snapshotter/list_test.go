package snapshotter_test

import (
	"encoding/json"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/services/snapshotter"
)

// TestListPagesLargeManifests: the manifests of a database of many
// collections are tens of KB each (a real one of 250 small collections is
// 70 KB), so 120 snapshots of it are more than the 8 MB a NATS message may
// carry. The whole listing in one reply was never sent: `snapshot list`
// waited 30 s and said the service was busy or stuck. The listing comes in
// pages of whole manifests, each under the max payload, newest first, and
// the next page is asked for with the previous one's next_after, which
// still works when the snapshot it names was deleted meanwhile.
func TestListPagesLargeManifests(t *testing.T) {
	e := newEnv(t)
	const tenant, db = "default_tenant", "many"
	e.seedSmall(t, tenant, db)
	e.startService(t, snapshotter.Config{})
	base := e.snap(t, contract.SnapshotCreateRequest{Name: "real", Tenant: tenant, Database: db, Actor: "test"}, time.Now().UTC().Add(time.Hour))

	// Copies of the real manifest as a database of 1,200 collections
	// would have them, written as the snapshotter writes manifests; two
	// of them started at the same time, which the id orders.
	const copies = 30
	start := time.Now().UTC().Add(-time.Hour).Truncate(time.Second)
	want := []string{base.SnapshotID}
	for i := copies - 1; i >= 0; i-- {
		m := base
		m.SnapshotID = fmt.Sprintf("snap_20261129T000000Z_%012d", i)
		m.Name = "copy" + strconv.Itoa(i)
		at := i
		if i == 1 {
			at = 2
		}
		m.StartedAt = start.Add(time.Duration(at) * time.Second)
		m.Collections = nil
		for c := range 1200 {
			cs := base.Collections[0]
			cs.Name = fmt.Sprintf("collection_%05d", c)
			cs.ID = fmt.Sprintf("00000000-0000-0000-0000-%012d", c)
			m.Collections = append(m.Collections, cs)
		}
		if _, err := e.nats.Assets.Manifests.Put(t.Context(), m.SnapshotID, mustJSON(t, m)); err != nil {
			t.Fatalf("put manifest %s: %v", m.SnapshotID, err)
		}
		want = append(want, m.SnapshotID)
	}
	// want is newest first: base, then copy29 ... copy2, copy1 (same time
	// as copy2, lower id), copy0.

	maxPayload := int(e.nats.Conn.MaxPayload())
	var got []string
	after := ""
	for page := 0; ; page++ {
		if page > copies {
			t.Fatalf("more pages than snapshots: %v", got)
		}
		req := contract.SnapshotListRequest{Envelope: contract.NewEnvelope("chromadb-rollback.v1.snapshot_list_request"), After: after}
		msg, err := e.nats.Conn.Request(e.subj.API("snapshot", "list"), mustJSON(t, req), 10*time.Second)
		if err != nil {
			t.Fatalf("list page %d (after %q): %v", page, after, err)
		}
		if h := msg.Header.Get("Nats-Service-Error-Code"); h != "" {
			t.Fatalf("list page %d: error %s: %s", page, h, msg.Data)
		}
		if len(msg.Data) > maxPayload {
			t.Errorf("page %d is %d bytes, over the max payload %d", page, len(msg.Data), maxPayload)
		}
		var list contract.SnapshotList
		if err := json.Unmarshal(msg.Data, &list); err != nil {
			t.Fatal(err)
		}
		if len(list.Snapshots) == 0 {
			t.Fatalf("page %d is empty (more %v)", page, list.More)
		}
		if len(list.ArchivesMissing) != 0 {
			t.Errorf("page %d: archives missing %v: every copy names the real archive", page, list.ArchivesMissing)
		}
		for _, m := range list.Snapshots {
			got = append(got, m.SnapshotID)
		}
		if !list.More {
			if list.NextAfter != "" {
				t.Errorf("last page has next_after %q", list.NextAfter)
			}
			break
		}
		if page == 0 {
			// The snapshot the cursor names goes before the next page
			// is asked for: the cursor still says where the page ended.
			last := list.Snapshots[len(list.Snapshots)-1].SnapshotID
			if err := e.nats.Assets.Manifests.Delete(t.Context(), last); err != nil {
				t.Fatal(err)
			}
		}
		after = list.NextAfter
	}
	if len(got) < 3 {
		t.Fatalf("listed %d snapshots in one page: the manifests were meant to need several", len(got))
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("listed\n%v\nwant\n%v", got, want)
	}

	code, data := e.request(t, e.subj.API("snapshot", "list"), []byte(`{"after":"yesterday"}`))
	var eb contract.ErrorBody
	if code != contract.CodeBadRequest || json.Unmarshal(data, &eb) != nil || eb.Field != "after" {
		t.Errorf("list after a bad cursor: %d %s, want 400 naming field after", code, data)
	}
}
