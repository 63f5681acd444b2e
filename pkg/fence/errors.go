package fence

import (
	"errors"
	"fmt"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
)

// ErrHeld matches, with errors.Is, a *HeldError: the lease belongs to
// another operation.
var ErrHeld = errors.New("fence: lease held by another operation")

// ErrLost means a lease this holder had was taken over (it expired) or
// removed; the holder must stop changing the tenant/database.
var ErrLost = errors.New("fence: lease lost")

// ErrSuperseded means the same holder took its lease again elsewhere: the
// work queue delivered the holder's command once more (its first worker
// looked dead) and the newer attempt now holds the lease. The older
// attempt must stop without touching what the newer one carries on.
var ErrSuperseded = errors.New("fence: lease taken again by a newer attempt of the same holder")

// HeldError says who holds the lease that could not be taken.
type HeldError struct {
	// Lease is the lease as it is held.
	Lease contract.Lease
}

// Error names the holder's operation, kind and actor, and since when.
func (e *HeldError) Error() string {
	l := e.Lease
	who := ""
	if l.Actor != "" {
		who = " by " + l.Actor
	}
	kind := l.Kind
	if kind == "" {
		kind = "operation"
	}
	on := ""
	if l.Server != "" {
		on = " on " + l.Server
	}
	return fmt.Sprintf("%s/%s%s is locked by %s %s (started%s at %s; lease expires at %s unless renewed)",
		l.Tenant, l.Database, on, kind, l.Holder, who,
		l.AcquiredAt.UTC().Format(time.RFC3339), l.ExpiresAt.UTC().Format(time.RFC3339))
}

// Is makes errors.Is(err, ErrHeld) true.
func (e *HeldError) Is(target error) bool { return target == ErrHeld }
