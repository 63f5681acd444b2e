package fence_test

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/fence"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
)

func lease(holder string) contract.Lease {
	return contract.Lease{Tenant: "acme", Database: "prod.eu", Holder: holder, Kind: "rollback", Actor: "alice"}
}

func TestLeaseExclusive(t *testing.T) {
	kv := testenv.StartNATS(t).Assets.State
	ctx := t.Context()

	a, err := fence.Acquire(ctx, kv, lease("op_a"), time.Minute)
	if err != nil {
		t.Fatalf("acquire free lease: %v", err)
	}
	_, err = fence.Acquire(ctx, kv, lease("op_b"), time.Minute)
	var held *fence.HeldError
	if !errors.As(err, &held) || !errors.Is(err, fence.ErrHeld) {
		t.Fatalf("second holder: err %v, want a HeldError", err)
	}
	if held.Lease.Holder != "op_a" {
		t.Errorf("HeldError names holder %q, want op_a", held.Lease.Holder)
	}
	for _, want := range []string{"acme/prod.eu", "rollback op_a", "by alice", "started", "expires"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if err := fence.Check(ctx, kv, "acme", "prod.eu", "op_b"); !errors.Is(err, fence.ErrHeld) {
		t.Errorf("Check for another holder: %v, want ErrHeld", err)
	}
	if err := fence.Check(ctx, kv, "acme", "prod.eu", "op_a"); err != nil {
		t.Errorf("Check for the holder itself: %v", err)
	}
	// Another database is independent.
	other := lease("op_b")
	other.Database = "staging"
	if _, err := fence.Acquire(ctx, kv, other, time.Minute); err != nil {
		t.Errorf("lease of another database: %v", err)
	}

	if err := a.Release(ctx); err != nil {
		t.Fatalf("release: %v", err)
	}
	if err := a.Release(ctx); err != nil {
		t.Errorf("second release: %v", err)
	}
	if cur, err := fence.Current(ctx, kv, "acme", "prod.eu"); err != nil || cur != nil {
		t.Errorf("after release: %+v, %v; want none", cur, err)
	}
	if _, err := fence.Acquire(ctx, kv, lease("op_b"), time.Minute); err != nil {
		t.Errorf("acquire after release: %v", err)
	}
}

func TestLeaseRetakenBySameHolder(t *testing.T) {
	kv := testenv.StartNATS(t).Assets.State
	ctx := t.Context()
	first, err := fence.Acquire(ctx, kv, lease("op_a"), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	// A redelivered command: same holder, a new process.
	again, err := fence.Acquire(ctx, kv, lease("op_a"), time.Minute)
	if err != nil {
		t.Fatalf("same holder re-taking its lease: %v", err)
	}
	if !again.Value().AcquiredAt.Equal(first.Value().AcquiredAt) {
		t.Errorf("re-taken lease AcquiredAt %v, want the original %v", again.Value().AcquiredAt, first.Value().AcquiredAt)
	}
	// The old handle lost its revision to a newer attempt of the same
	// holder: renewing it must not clobber, and says it was superseded,
	// not lost to another operation.
	if err := first.Renew(ctx, time.Minute); !errors.Is(err, fence.ErrSuperseded) || errors.Is(err, fence.ErrLost) {
		t.Errorf("renew through a stale handle: %v, want ErrSuperseded", err)
	}
	if err := again.Renew(ctx, 2*time.Minute); err != nil {
		t.Errorf("renew: %v", err)
	}
	if err := again.Release(ctx); err != nil {
		t.Errorf("release: %v", err)
	}
}

func TestLeaseExpiry(t *testing.T) {
	kv := testenv.StartNATS(t).Assets.State
	ctx := t.Context()
	a, err := fence.Acquire(ctx, kv, lease("op_a"), 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(150 * time.Millisecond)
	if err := fence.Check(ctx, kv, "acme", "prod.eu", "op_b"); err != nil {
		t.Errorf("Check over an expired lease: %v", err)
	}
	if _, err := fence.Acquire(ctx, kv, lease("op_b"), time.Minute); err != nil {
		t.Fatalf("taking over an expired lease: %v", err)
	}
	if err := a.Renew(ctx, time.Minute); !errors.Is(err, fence.ErrLost) || !strings.Contains(err.Error(), "op_b") {
		t.Errorf("renew after takeover: %v, want ErrLost naming op_b", err)
	}
	if err := a.Release(ctx); !errors.Is(err, fence.ErrLost) {
		t.Errorf("release after takeover: %v, want ErrLost", err)
	}
	if cur, _ := fence.Current(ctx, kv, "acme", "prod.eu"); cur == nil || cur.Holder != "op_b" {
		t.Errorf("the old holder's release removed the new lease: %+v", cur)
	}
	if err := fence.Release(ctx, kv, "acme", "prod.eu", "op_b"); err != nil {
		t.Errorf("release by holder without handle: %v", err)
	}
}

func TestLeaseRace(t *testing.T) {
	kv := testenv.StartNATS(t).Assets.State
	ctx := t.Context()
	const n = 8
	var wg sync.WaitGroup
	var mu sync.Mutex
	won := 0
	for i := range n {
		wg.Go(func() {
			_, err := fence.Acquire(ctx, kv, lease("op_"+string(rune('a'+i))), time.Minute)
			if err == nil {
				mu.Lock()
				won++
				mu.Unlock()
			} else if !errors.Is(err, fence.ErrHeld) {
				t.Errorf("acquire: %v", err)
			}
		})
	}
	wg.Wait()
	if won != 1 {
		t.Errorf("%d holders won the lease, want exactly 1", won)
	}
}

func TestAcquireRejectsBadInput(t *testing.T) {
	kv := testenv.StartNATS(t).Assets.State
	for _, tc := range []struct {
		name string
		l    contract.Lease
		ttl  time.Duration
		want string
	}{
		{"no tenant", contract.Lease{Database: "d", Holder: "h"}, time.Minute, "tenant and database"},
		{"no holder", contract.Lease{Tenant: "t", Database: "d"}, time.Minute, "holder"},
		{"no ttl", lease("h"), 0, "ttl"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := fence.Acquire(t.Context(), kv, tc.l, tc.ttl); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err %v, want one saying %q", err, tc.want)
			}
		})
	}
}

func TestFence(t *testing.T) {
	kv := testenv.StartNATS(t).Assets.State
	ctx := t.Context()
	f := contract.Fence{Tenant: "acme", Database: "prod", OpID: "op_a", Reason: "rollback", Actor: "alice"}
	if got, err := fence.Get(ctx, kv, "acme", "prod"); err != nil || got != nil {
		t.Fatalf("no fence yet: %+v, %v", got, err)
	}
	if err := fence.Raise(ctx, kv, f); err != nil {
		t.Fatal(err)
	}
	first, err := fence.Get(ctx, kv, "acme", "prod")
	if err != nil || first == nil || first.OpID != "op_a" || first.Type != contract.TypeFence || first.RaisedAt.IsZero() {
		t.Fatalf("raised fence: %+v, %v", first, err)
	}
	if err := fence.Raise(ctx, kv, f); err != nil {
		t.Errorf("raise again: %v", err)
	}
	if again, _ := fence.Get(ctx, kv, "acme", "prod"); !again.RaisedAt.Equal(first.RaisedAt) {
		t.Errorf("raising again moved RaisedAt from %v to %v", first.RaisedAt, again.RaisedAt)
	}
	if err := fence.Lower(ctx, kv, "acme", "prod", "op_other"); err == nil || !strings.Contains(err.Error(), "op_a") {
		t.Errorf("lower by another op: %v, want an error naming op_a", err)
	}
	if got, _ := fence.Get(ctx, kv, "acme", "prod"); got == nil {
		t.Fatal("another op's Lower removed the fence")
	}
	// A stale fence of a dead op is replaced by the op holding the lease.
	g := f
	g.OpID = "op_b"
	if err := fence.Raise(ctx, kv, g); err != nil {
		t.Fatal(err)
	}
	if got, _ := fence.Get(ctx, kv, "acme", "prod"); got == nil || got.OpID != "op_b" {
		t.Errorf("fence after takeover: %+v", got)
	}
	for range 2 {
		if err := fence.Lower(ctx, kv, "acme", "prod", "op_b"); err != nil {
			t.Errorf("lower: %v", err)
		}
	}
	if got, err := fence.Get(ctx, kv, "acme", "prod"); err != nil || got != nil {
		t.Errorf("after lower: %+v, %v", got, err)
	}
}
