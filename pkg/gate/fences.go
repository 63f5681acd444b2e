package gate

import "github.com/chromadb-rollback/chromadb-rollback/pkg/contract"

// FenceSource says whether the write fence of a tenant/database is raised.
type FenceSource interface {
	Fenced(tenant, database string) (contract.Fence, bool)
}

// FenceLister is a FenceSource that can also list every raised fence. The
// gate needs it to refuse writes that reach beyond one database (ScopeTenant,
// ScopeServer) and for WithFenceAllWritesWhenAnyFence; with a source that
// is not a FenceLister those writes pass.
type FenceLister interface {
	FenceSource
	Fences() []contract.Fence
}

// readier is a FenceSource that knows when it has loaded its state. Until it
// is ready the gate refuses every write.
type readier interface {
	Ready() <-chan struct{}
}

// dbKey names a tenant/database.
type dbKey struct{ tenant, database string }
