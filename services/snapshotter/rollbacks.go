package snapshotter

import (
	"context"
	"fmt"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/bus"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/fence"
)

// rollbackUnderway says which rollback, other than forOp, is restoring
// tenant/database: it holds the database's lease, or its write fence is
// raised by an operation not yet ended. A snapshot
// taken meanwhile would hold a half-restored database, staging
// collections included. "" when none is. A fence left raised by a
// rollback that has ended (failed half way) does not stop a snapshot:
// nothing writes any more, and the state may be worth keeping.
func (s *Service) rollbackUnderway(ctx context.Context, tenant, database, forOp string) (string, error) {
	db := tenant + "/" + database
	l, err := fence.Current(ctx, s.assets.State, tenant, database)
	if err != nil {
		return "", err
	}
	if l != nil && l.Holder != forOp && time.Now().Before(l.ExpiresAt) {
		return fmt.Sprintf("%s %s (asked by %s at %s) holds %s", l.Kind, l.Holder, dashIfEmpty(l.Actor), l.AcquiredAt.UTC().Format(time.RFC3339), db), nil
	}
	f, err := fence.Get(ctx, s.assets.State, tenant, database)
	if err != nil || f == nil || f.OpID == forOp {
		return "", err
	}
	if op, err := bus.GetOperation(ctx, s.assets.State, f.OpID); err == nil && op != nil && contract.Ended(op.Status) {
		return "", nil
	}
	return fmt.Sprintf("rollback %s raised the write fence of %s at %s", f.OpID, db, f.RaisedAt.UTC().Format(time.RFC3339)), nil
}

// errRollbackUnderway ends a snapshot of a database a rollback restores.
type errRollbackUnderway struct{ why string }

func (e *errRollbackUnderway) Error() string {
	return fmt.Sprintf("%s: a snapshot now would hold a half-restored database; take it once the rollback has ended (chromadb-rollback status)", e.why)
}

func dashIfEmpty(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
