package gate

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/natsembed"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
	"github.com/nats-io/nats.go/jetstream"
)

// eventually polls cond every 5 ms until it holds or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func putFence(t *testing.T, kv jetstream.KeyValue, tenant, database, op, reason string) uint64 {
	t.Helper()
	f := contract.Fence{
		Envelope: contract.NewEnvelope(contract.TypeFence),
		Tenant:   tenant, Database: database, OpID: op, Reason: reason, Actor: "test",
		RaisedAt: time.Now().UTC().Truncate(time.Millisecond),
	}
	b, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	rev, err := kv.Put(context.Background(), contract.FenceKey(tenant, database), b)
	if err != nil {
		t.Fatalf("put fence %s/%s: %v", tenant, database, err)
	}
	return rev
}

func deleteFence(t *testing.T, kv jetstream.KeyValue, tenant, database string) {
	t.Helper()
	if err := kv.Delete(context.Background(), contract.FenceKey(tenant, database)); err != nil {
		t.Fatalf("delete fence %s/%s: %v", tenant, database, err)
	}
}

func watch(t *testing.T, kv jetstream.KeyValue, opts ...FencesOption) *KVFences {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f, err := WatchFences(ctx, kv, opts...)
	if err != nil {
		cancel()
		t.Fatalf("WatchFences: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		<-f.Done()
	})
	select {
	case <-f.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("fences not ready")
	}
	return f
}

func fencedOp(f FenceSource, tenant, database string) string {
	fe, ok := f.Fenced(tenant, database)
	if !ok {
		return ""
	}
	return fe.OpID
}

func TestKVFencesFollowsBucket(t *testing.T) {
	n := testenv.StartNATS(t)
	kv := n.Assets.State
	ctx := context.Background()

	// Before the watch: a raised fence, a lowered one, a purged one, an
	// unreadable one, and keys that are not fences.
	putFence(t, kv, "acme", "prod", "op_1", "validation")
	putFence(t, kv, "acme", "old", "op_0", "")
	deleteFence(t, kv, "acme", "old")
	putFence(t, kv, "acme", "purged", "op_p", "")
	if err := kv.Purge(ctx, contract.FenceKey("acme", "purged")); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, contract.FenceKey("t.with.dots", "db.v2"), []byte("not json")); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, contract.LeaseKey("acme", "stage"), []byte("{}")); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "fence.nodatabase", []byte("{}")); err != nil {
		t.Fatal(err)
	}

	f := watch(t, kv)
	if !f.Synced() {
		t.Error("not synced after Ready")
	}
	fe, ok := f.Fenced("acme", "prod")
	if !ok || fe.OpID != "op_1" || fe.Reason != "validation" || fe.Tenant != "acme" || fe.Database != "prod" || fe.RaisedAt.IsZero() {
		t.Fatalf("acme/prod: %+v %v", fe, ok)
	}
	for _, db := range []string{"old", "purged", "stage"} {
		if _, ok := f.Fenced("acme", db); ok {
			t.Errorf("acme/%s fenced", db)
		}
	}
	// A fence whose value cannot be read still fences.
	if fe, ok := f.Fenced("t.with.dots", "db.v2"); !ok || fe.Tenant != "t.with.dots" || fe.Database != "db.v2" {
		t.Errorf("unreadable fence: %+v %v", fe, ok)
	}
	if got := f.Fences(); len(got) != 2 || got[0].Tenant != "acme" || got[1].Tenant != "t.with.dots" {
		t.Errorf("Fences: %+v", got)
	}

	// Updates: raise, replace, lower, purge.
	putFence(t, kv, "acme", "stage", "op_2", "")
	eventually(t, 5*time.Second, "acme/stage raised", func() bool { return fencedOp(f, "acme", "stage") == "op_2" })
	putFence(t, kv, "acme", "prod", "op_3", "manual")
	eventually(t, 5*time.Second, "acme/prod replaced", func() bool { return fencedOp(f, "acme", "prod") == "op_3" })
	deleteFence(t, kv, "acme", "prod")
	eventually(t, 5*time.Second, "acme/prod lowered", func() bool { _, ok := f.Fenced("acme", "prod"); return !ok })
	if err := kv.Purge(ctx, contract.FenceKey("acme", "stage")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "acme/stage purged", func() bool { _, ok := f.Fenced("acme", "stage"); return !ok })
	// And raised again after a delete.
	putFence(t, kv, "acme", "prod", "op_4", "")
	eventually(t, 5*time.Second, "acme/prod raised again", func() bool { return fencedOp(f, "acme", "prod") == "op_4" })
}

func TestKVFencesEmptyBucketIsReady(t *testing.T) {
	n := testenv.StartNATS(t)
	f := watch(t, n.Assets.State)
	if len(f.Fences()) != 0 {
		t.Fatalf("fences in an empty bucket: %+v", f.Fences())
	}
}

// When the watch ends it is set up again, and the state is rebuilt from the
// bucket: a fence lowered or raised meanwhile is seen correctly.
func TestKVFencesRestartsWatch(t *testing.T) {
	n := testenv.StartNATS(t)
	kv := n.Assets.State
	putFence(t, kv, "acme", "prod", "op_1", "")
	putFence(t, kv, "acme", "stage", "op_2", "")
	f := watch(t, kv)
	for round := 1; round <= 3; round++ {
		f.mu.RLock()
		w := f.watcher
		f.mu.RUnlock()
		if err := w.Stop(); err != nil {
			t.Fatal(err)
		}
		// Changes while the watch is down (or being set up again).
		deleteFence(t, kv, "acme", "prod")
		putFence(t, kv, "acme", "new", "op_n", "")
		eventually(t, 10*time.Second, "watch set up again", func() bool {
			f.mu.RLock()
			defer f.mu.RUnlock()
			return f.restarts == round && f.synced
		})
		eventually(t, 5*time.Second, "state rebuilt", func() bool {
			_, prod := f.Fenced("acme", "prod")
			return !prod && fencedOp(f, "acme", "stage") == "op_2" && fencedOp(f, "acme", "new") == "op_n"
		})
		// And it follows updates again.
		putFence(t, kv, "acme", "prod", "op_r", "")
		eventually(t, 5*time.Second, "update after restart", func() bool { return fencedOp(f, "acme", "prod") == "op_r" })
	}
}

// A restart of the NATS server (same store) does not lose the watch, and
// with FencesConn changes after the reconnect are seen at once. (Without
// it the ordered consumer takes about 18 s to notice its consumer is gone.)
func TestKVFencesSurvivesServerRestart(t *testing.T) {
	n := testenv.StartNATS(t)
	kv := n.Assets.State
	putFence(t, kv, "acme", "prod", "op_1", "")
	f := watch(t, kv, FencesConn(n.Conn), FencesLogger(slog.New(slog.NewTextHandler(t.Output(), nil))))

	store := n.Server.StoreDir()
	addr := n.Server.Addr().(*net.TCPAddr).String()
	n.Server.Shutdown()
	n.Server.WaitForShutdown()
	s, err := natsembed.Start(natsembed.Options{Listen: addr, StoreDir: store})
	if err != nil {
		t.Fatalf("restart NATS: %v", err)
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	if _, ok := f.Fenced("acme", "prod"); !ok {
		t.Fatal("fence forgotten while NATS was down")
	}
	eventually(t, 5*time.Second, "not synced while disconnected", func() bool { return !f.Synced() })
	eventually(t, 15*time.Second, "reconnected", func() bool { return n.Conn.IsConnected() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		if err := kv.Delete(ctx, contract.FenceKey("acme", "prod")); err == nil {
			break
		} else if ctx.Err() != nil {
			t.Fatalf("delete after restart: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	putFence(t, kv, "acme", "after", "op_2", "")
	eventually(t, 5*time.Second, "changes after the restart seen", func() bool {
		_, prod := f.Fenced("acme", "prod")
		return !prod && fencedOp(f, "acme", "after") == "op_2"
	})
}

func TestWatchFencesStops(t *testing.T) {
	n := testenv.StartNATS(t)
	ctx, cancel := context.WithCancel(context.Background())
	f, err := WatchFences(ctx, n.Assets.State)
	if err != nil {
		t.Fatal(err)
	}
	<-f.Ready()
	cancel()
	select {
	case <-f.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("watch did not stop with its context")
	}
	if _, err := WatchFences(context.Background(), nil); err == nil {
		t.Fatal("nil bucket accepted")
	}
}
