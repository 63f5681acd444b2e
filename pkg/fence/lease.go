package fence

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/nats-io/nats.go/jetstream"
)

// casAttempts bounds the compare-and-set loops: each retry means another
// writer changed the key in between, which settles within a few rounds.
const casAttempts = 8

// Lease is a lease this process holds. It is safe for concurrent use
// (a renewer goroutine and the job that releases it).
type Lease struct {
	kv  jetstream.KeyValue
	key string

	mu    sync.Mutex
	value contract.Lease
	rev   uint64
}

// Acquire takes the lease of want.Tenant/want.Database for want.Holder (an
// op id) until ttl from now. It succeeds when the lease is free, expired, or
// already held by the same holder (a redelivered command re-taking its own
// lease; its AcquiredAt is kept). Otherwise it returns a *HeldError naming
// the holder, which matches ErrHeld.
func Acquire(ctx context.Context, kv jetstream.KeyValue, want contract.Lease, ttl time.Duration) (*Lease, error) {
	switch {
	case want.Tenant == "" || want.Database == "":
		return nil, errors.New("fence: acquire: tenant and database are required")
	case want.Holder == "":
		return nil, errors.New("fence: acquire: holder is required")
	case ttl <= 0:
		return nil, fmt.Errorf("fence: acquire: ttl %s must be positive", ttl)
	}
	key := contract.LeaseKeyOn(want.Server, want.Tenant, want.Database)
	for range casAttempts {
		now := time.Now().UTC()
		v := want
		v.Envelope = contract.NewEnvelope(contract.TypeLease)
		v.AcquiredAt = now
		v.ExpiresAt = now.Add(ttl)
		rev, err := kv.Create(ctx, key, mustJSON(v))
		if err == nil {
			return &Lease{kv: kv, key: key, value: v, rev: rev}, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return nil, fmt.Errorf("fence: take lease %s: %w", key, err)
		}
		cur, curRev, err := read(ctx, kv, key)
		if err != nil {
			return nil, err
		}
		if cur == nil {
			continue // released meanwhile: Create again
		}
		if cur.Holder != want.Holder && now.Before(cur.ExpiresAt) {
			return nil, &HeldError{Lease: *cur}
		}
		if cur.Holder == want.Holder {
			v.AcquiredAt = cur.AcquiredAt
		}
		rev, err = kv.Update(ctx, key, mustJSON(v), curRev)
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("fence: take lease %s: %w", key, err)
		}
		return &Lease{kv: kv, key: key, value: v, rev: rev}, nil
	}
	return nil, fmt.Errorf("fence: take lease %s: the key kept changing; try again", key)
}

// Value is the lease as last written.
func (l *Lease) Value() contract.Lease {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.value
}

// Renew extends the lease to ttl from now. It returns ErrLost if the lease
// was taken over or removed since it was last written, and ErrSuperseded
// if the same holder took it again since (see Acquire).
func (l *Lease) Renew(ctx context.Context, ttl time.Duration) error {
	if ttl <= 0 {
		return fmt.Errorf("fence: renew: ttl %s must be positive", ttl)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	v := l.value
	v.Envelope = contract.NewEnvelope(contract.TypeLease)
	v.ExpiresAt = time.Now().UTC().Add(ttl)
	rev, err := l.kv.Update(ctx, l.key, mustJSON(v), l.rev)
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		cur, _, rerr := read(ctx, l.kv, l.key)
		if rerr == nil && cur != nil && cur.Holder != l.value.Holder {
			return fmt.Errorf("%w: %s now held by %s %s", ErrLost, l.key, cur.Kind, cur.Holder)
		}
		if rerr == nil && cur != nil {
			return fmt.Errorf("%w: %s, by %s", ErrSuperseded, l.key, cur.Holder)
		}
		return fmt.Errorf("%w: %s changed since it was taken", ErrLost, l.key)
	}
	if err != nil {
		return fmt.Errorf("fence: renew lease %s: %w", l.key, err)
	}
	l.value, l.rev = v, rev
	return nil
}

// Release deletes the lease if it is still this holder's. A lease already
// gone is not an error; one taken over by another holder is left alone and
// reported as ErrLost.
func (l *Lease) Release(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return release(ctx, l.kv, l.key, l.value.Holder, l.rev)
}

// Release deletes the lease of tenant/database if holder holds it, without
// a Lease handle (e.g. to clean up after a command that was never run).
func Release(ctx context.Context, kv jetstream.KeyValue, tenant, database, holder string) error {
	return ReleaseOn(ctx, kv, "", tenant, database, holder)
}

// ReleaseOn is Release for the lease of tenant/database on the Chroma at
// server ("" for the services' own; see contract.LeaseKeyOn).
func ReleaseOn(ctx context.Context, kv jetstream.KeyValue, server, tenant, database, holder string) error {
	return release(ctx, kv, contract.LeaseKeyOn(server, tenant, database), holder, 0)
}

func release(ctx context.Context, kv jetstream.KeyValue, key, holder string, rev uint64) error {
	for range casAttempts {
		if rev != 0 {
			err := kv.Delete(ctx, key, jetstream.LastRevision(rev))
			if err == nil {
				return nil
			}
			if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
				return fmt.Errorf("fence: release lease %s: %w", key, err)
			}
		}
		cur, curRev, err := read(ctx, kv, key)
		if err != nil {
			return err
		}
		switch {
		case cur == nil:
			return nil
		case cur.Holder != holder:
			return fmt.Errorf("%w: %s is held by %s %s, left alone", ErrLost, key, cur.Kind, cur.Holder)
		}
		rev = curRev
	}
	return fmt.Errorf("fence: release lease %s: the key kept changing; try again", key)
}

// Current returns the lease of tenant/database as stored, expired or not,
// or nil if there is none.
func Current(ctx context.Context, kv jetstream.KeyValue, tenant, database string) (*contract.Lease, error) {
	l, _, err := read(ctx, kv, contract.LeaseKey(tenant, database))
	return l, err
}

// Check returns nil if holder could take the lease of tenant/database now
// (it is free, expired or already holder's), and a *HeldError otherwise.
func Check(ctx context.Context, kv jetstream.KeyValue, tenant, database, holder string) error {
	return CheckOn(ctx, kv, "", tenant, database, holder)
}

// CheckOn is Check for the lease of tenant/database on the Chroma at
// server ("" for the services' own; see contract.LeaseKeyOn).
func CheckOn(ctx context.Context, kv jetstream.KeyValue, server, tenant, database, holder string) error {
	l, _, err := read(ctx, kv, contract.LeaseKeyOn(server, tenant, database))
	if err != nil {
		return err
	}
	if l == nil || l.Holder == holder || !time.Now().Before(l.ExpiresAt) {
		return nil
	}
	return &HeldError{Lease: *l}
}

// read returns the lease under key and its revision; nil if absent or deleted.
func read(ctx context.Context, kv jetstream.KeyValue, key string) (*contract.Lease, uint64, error) {
	e, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("fence: read lease %s: %w", key, err)
	}
	var l contract.Lease
	if err := json.Unmarshal(e.Value(), &l); err != nil {
		return nil, 0, fmt.Errorf("fence: lease %s is unreadable (%v); delete it with `nats kv del %s %s` if no operation runs", key, err, contract.BucketState, key)
	}
	return &l, e.Revision(), nil
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("fence: encode %T: %v", v, err)) // plain structs always encode
	}
	return b
}
