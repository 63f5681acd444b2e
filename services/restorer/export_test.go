package restorer

import (
	"context"
	"time"
)

// HookPoint exposes hookPoint to the tests.
type HookPoint = hookPoint

// SetHook makes s call h at named points of its jobs; set it before Run.
func SetHook(s *Service, h func(ctx context.Context, p HookPoint) error) { s.hook = h }

// SetSplitMin makes s split the last batch it writes from n records on
// (at least 2); set it before Run.
func SetSplitMin(s *Service, n int) { s.splitMin = max(n, 2) }

// SetLookupTimeout bounds s's plan lookups of the target tenant and
// database by d instead of 20 s; set it before Run.
func SetLookupTimeout(s *Service, d time.Duration) { s.lookupTimeout = d }

// SetFinishTimeout gives the end of s's jobs d instead of a minute for its
// cleanup, and as much for what follows it; set it before Run.
func SetFinishTimeout(s *Service, d time.Duration) { s.finishTimeout = d }
