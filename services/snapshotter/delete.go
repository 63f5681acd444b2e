package snapshotter

import (
	"context"
	"errors"
	"fmt"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/bus"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/nats-io/nats.go/jetstream"
)

// errManifestChanged says a manifest was updated (e.g. pinned) or deleted
// after the caller read it, so the snapshot was not deleted.
var errManifestChanged = errors.New("the manifest changed since it was read")

// errObjectLeft says the snapshot is deleted but its archive object is
// still in the store, as an orphan.
var errObjectLeft = errors.New("archive object left behind")

// deleteSnapshot deletes a snapshot: the manifest goes first, because
// without it the snapshot no longer exists, and an object left by a crash
// between the two is only an orphan. With rev non-zero the manifest is
// deleted only if it is still at that revision (errManifestChanged
// otherwise). A failure to delete the object is returned wrapping
// errObjectLeft: the snapshot is gone all the same.
func (s *Service) deleteSnapshot(ctx context.Context, m *contract.SnapshotManifest, rev uint64) error {
	var opts []jetstream.KVDeleteOpt
	if rev != 0 {
		opts = append(opts, jetstream.LastRevision(rev))
	}
	if err := s.assets.Manifests.Purge(ctx, m.SnapshotID, opts...); err != nil {
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return errManifestChanged
		}
		return fmt.Errorf("delete manifest: %w", err)
	}
	if err := s.assets.Snapshots.Delete(ctx, m.Object); err != nil && !bus.IsNotFound(err) {
		s.log.Warn("archive object left behind", "object", m.Object, "err", err)
		return fmt.Errorf("%w: %s: %v", errObjectLeft, m.Object, err)
	}
	return nil
}
