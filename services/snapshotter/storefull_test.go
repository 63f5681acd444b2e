package snapshotter_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
	"github.com/chromadb-rollback/chromadb-rollback/services/snapshotter"
)

// TestSnapshotStoreFull: when the object store has no room for the
// archive (its stream's byte limit, as a full disk or an account limit
// would), the snapshot fails saying so, leaves no manifest and no chunk
// behind, and once there is room the next one succeeds.
func TestSnapshotStoreFull(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	if err := testenv.SeedWorkload(ctx, e.cc, "default_tenant", "default_database", 2, 2000, 64, 200); err != nil {
		t.Fatal(err)
	}
	stream := "OBJ_" + contract.ObjectSnapshots
	setLimit := func(max int64) {
		t.Helper()
		s, err := e.nats.JS.Stream(ctx, stream)
		if err != nil {
			t.Fatal(err)
		}
		cfg := s.CachedInfo().Config
		cfg.MaxBytes = max
		if _, err := e.nats.JS.UpdateStream(ctx, cfg); err != nil {
			t.Fatalf("limit %s to %d bytes: %v", stream, max, err)
		}
	}
	// After the service started: its bootstrap sets the store's own limits.
	e.startService(t, snapshotter.Config{})
	setLimit(256 << 10) // the archive is about 600 KiB

	rep := e.create(t, contract.SnapshotCreateRequest{Name: "no_room", Actor: "test"})
	op := e.waitOp(t, rep.OpID, 2*time.Minute)
	if op.Status != contract.StatusFailed {
		t.Fatalf("snapshot into a full store ended %s: %s", op.Status, op.Error)
	}
	for _, want := range []string{"the object store CHROMA_SNAPSHOTS has no room for it", "maximum bytes exceeded", "snapshot delete"} {
		if !strings.Contains(op.Error, want) {
			t.Errorf("error %q does not say %q", op.Error, want)
		}
	}
	if _, ok := e.manifest(t, rep.SnapshotID); ok {
		t.Error("a manifest was written for a snapshot that could not be stored")
	}
	s, err := e.nats.JS.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Bytes > 0 {
		t.Errorf("%s holds %d bytes in %d messages after the failed snapshot, want none", stream, info.State.Bytes, info.State.Msgs)
	}

	setLimit(-1)
	rep = e.create(t, contract.SnapshotCreateRequest{Name: "room_again", Actor: "test"})
	if op := e.waitOp(t, rep.OpID, 2*time.Minute); op.Status != contract.StatusCompleted {
		t.Fatalf("snapshot after room was made ended %s: %s", op.Status, op.Error)
	}
}

// TestHealthSaysStoreNearlyFull: chroma.api.health (health-check) fails its
// jetstream check while the snapshots' object store is at 90% or more of
// its byte limit, the watchdog's default share for pausing migrations, as
// for the account's storage limit: the next snapshot may not fit. Found by
// hand: with the JetStream account at 93% of its limit health-check said
// "JetStream ready" while the watchdog alerted and every snapshot of the
// database failed for want of room.
func TestHealthSaysStoreNearlyFull(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	if err := testenv.SeedWorkload(ctx, e.cc, "default_tenant", "default_database", 1, 500, 16, 50); err != nil {
		t.Fatal(err)
	}
	e.startService(t, snapshotter.Config{})
	rep := e.create(t, contract.SnapshotCreateRequest{Name: "first", Actor: "test"})
	if op := e.waitOp(t, rep.OpID, time.Minute); op.Status != contract.StatusCompleted {
		t.Fatalf("snapshot: %s %s", op.Status, op.Error)
	}
	jetstreamCheck := func() contract.HealthCheck {
		t.Helper()
		code, data := e.request(t, e.subj.API("health"), []byte(`{}`))
		var h contract.Health
		if err := json.Unmarshal(data, &h); code != 0 || err != nil {
			t.Fatalf("health: %d %s (%v)", code, data, err)
		}
		for _, c := range h.Checks {
			if c.Name == "jetstream" {
				return c
			}
		}
		t.Fatalf("health has no jetstream check: %s", data)
		return contract.HealthCheck{}
	}
	if c := jetstreamCheck(); !c.OK {
		t.Fatalf("jetstream check with room: %+v", c)
	}
	s, err := e.nats.JS.Stream(ctx, "OBJ_"+contract.ObjectSnapshots)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cfg := info.Config
	cfg.MaxBytes = int64(float64(info.State.Bytes) / 0.95)
	if _, err := e.nats.JS.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	c := jetstreamCheck()
	if c.OK || !strings.Contains(c.Detail, "nearly full") || !strings.Contains(c.Detail, "object store "+contract.ObjectSnapshots) ||
		!strings.Contains(c.Detail, "(95%)") || !strings.Contains(c.Detail, "cleanup") {
		t.Errorf("jetstream check at 95%% of the object store's limit: %+v; want it failed, saying so", c)
	}
	cfg.MaxBytes = -1
	if _, err := e.nats.JS.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if c := jetstreamCheck(); !c.OK {
		t.Errorf("jetstream check with the limit lifted: %+v", c)
	}
}
