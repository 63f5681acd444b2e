package restorer

import "context"

// HookPoint exposes hookPoint to the tests.
type HookPoint = hookPoint

// SetHook makes s call h at named points of its jobs; set it before Run.
func SetHook(s *Service, h func(ctx context.Context, p HookPoint) error) { s.hook = h }

// SetSplitMin makes s split the last batch it writes from n records on
// (at least 2); set it before Run.
func SetSplitMin(s *Service, n int) { s.splitMin = max(n, 2) }
