package snapshotter_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/record"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
	"github.com/chromadb-rollback/chromadb-rollback/services/snapshotter"
)

// TestSnapshotWhileCollectionsChange: while a whole database is exported,
// a migration creates a collection, renames one and changes another's
// metadata, leaving every count as it was. The snapshot says it is not
// consistent and names each change. A snapshot of named collections only
// looks at those, and holds the whole database (is not partial) only when
// they are all its collections both before and after the export. (A
// collection deleted during the export fails the snapshot: its read or its
// count after the export finds it gone.)
func TestSnapshotWhileCollectionsChange(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	const tenant, db = "default_tenant", "reshaped"
	if err := testenv.SeedWorkload(ctx, e.cc, tenant, db, 3, 30, 8, 20); err != nil {
		t.Fatal(err)
	}
	colls, err := e.cc.ListCollections(ctx, tenant, db)
	if err != nil || len(colls) != 3 {
		t.Fatalf("list: %v, %d collections", err, len(colls))
	}
	renamed, retagged := colls[1], colls[2]

	// A proxy in front of Chroma runs the armed change just before the
	// export's first read of records.
	var mu sync.Mutex
	var change func()
	u, err := url.Parse(e.chroma.URL)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/get") {
			mu.Lock()
			f := change
			change = nil
			mu.Unlock()
			if f != nil {
				f()
			}
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	armChange := func(f func(ctx context.Context) error) {
		mu.Lock()
		defer mu.Unlock()
		change = func() {
			if err := f(context.Background()); err != nil {
				t.Errorf("change the collections: %v", err)
			}
		}
	}
	cc, err := chroma.New(srv.URL, chroma.WithRetryMaxElapsed(3*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	e.startServiceWith(t, snapshotter.Config{}, cc)
	take := func(req contract.SnapshotCreateRequest) *contract.SnapshotManifest {
		t.Helper()
		req.Tenant, req.Database, req.Actor = tenant, db, "test"
		rep := e.create(t, req)
		if op := e.waitOp(t, rep.OpID, time.Minute); op.Status != contract.StatusCompleted {
			t.Fatalf("snapshot ended %s: %s", op.Status, op.Error)
		}
		m, ok := e.manifest(t, rep.SnapshotID)
		if !ok {
			t.Fatalf("no manifest for %s", rep.SnapshotID)
		}
		return m
	}

	if m := take(contract.SnapshotCreateRequest{Name: "quiet"}); !m.Consistent || m.Inconsistency != "" {
		t.Fatalf("snapshot of a quiet database: consistent %v, %q", m.Consistent, m.Inconsistency)
	}

	newName := renamed.Name + "_v2"
	armChange(func(ctx context.Context) error {
		if err := e.cc.ModifyCollection(ctx, tenant, db, renamed.ID, &newName, nil); err != nil {
			return err
		}
		if err := e.cc.ModifyCollection(ctx, tenant, db, retagged.ID, nil, record.Metadata{"stage": "migrated"}); err != nil {
			return err
		}
		_, err := e.cc.CreateCollection(ctx, tenant, db, chroma.CreateCollection{Name: "newcomer"})
		return err
	})
	m := take(contract.SnapshotCreateRequest{Name: "reshaped"})
	if m.Consistent {
		t.Fatal("a snapshot taken while the collections changed is marked consistent")
	}
	for _, want := range []string{
		"the database's collections changed during the export (writers were active)",
		`"` + renamed.Name + `" renamed to "` + newName + `"`,
		`metadata of "` + retagged.Name + `" changed`,
		`"newcomer" created`,
	} {
		if !strings.Contains(m.Inconsistency, want) {
			t.Errorf("inconsistency %q does not say %q", m.Inconsistency, want)
		}
	}
	if strings.Contains(m.Inconsistency, "counts changed") || strings.Contains(m.Inconsistency, colls[0].Name) {
		t.Errorf("inconsistency %q names what did not change", m.Inconsistency)
	}
	// What was read is what the collections held before the change.
	if len(m.Collections) != 3 || m.Collections[1].Name != renamed.Name || m.TotalRecords != 30 {
		t.Errorf("manifest holds %d collections (%+v), %d records; want the 3 as listed before, 30 records", len(m.Collections), m.Collections, m.TotalRecords)
	}

	// Named collections: a collection created elsewhere in the database
	// is none of this snapshot's business.
	armChange(func(ctx context.Context) error {
		_, err := e.cc.CreateCollection(ctx, tenant, db, chroma.CreateCollection{Name: "bystander"})
		return err
	})
	if m := take(contract.SnapshotCreateRequest{Name: "named", Collections: []string{colls[0].Name}}); !m.Consistent || !m.Partial {
		t.Errorf("snapshot of one collection while another was created: partial %v, %q", m.Partial, m.Inconsistency)
	}

	// Named, every collection of the database as it is listed before the
	// export: whole only if no collection was created during it.
	now, err := e.cc.ListCollections(ctx, tenant, db)
	if err != nil {
		t.Fatal(err)
	}
	var every []string
	for _, c := range now {
		every = append(every, c.Name)
	}
	if m := take(contract.SnapshotCreateRequest{Name: "every_quiet", Collections: every}); m.Partial || !m.Consistent {
		t.Errorf("snapshot naming every collection of a quiet database: partial %v, %q", m.Partial, m.Inconsistency)
	}
	armChange(func(ctx context.Context) error {
		_, err := e.cc.CreateCollection(ctx, tenant, db, chroma.CreateCollection{Name: "latecomer"})
		return err
	})
	if m := take(contract.SnapshotCreateRequest{Name: "every_then_one_more", Collections: every}); !m.Partial || !m.Consistent {
		t.Errorf("snapshot naming every collection while one more was created: partial %v (want true), %q", m.Partial, m.Inconsistency)
	}
	mu.Lock()
	if change != nil {
		t.Error("the armed change never ran: the export read no records")
	}
	mu.Unlock()
}
