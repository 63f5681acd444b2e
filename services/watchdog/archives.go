package watchdog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/bus"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/nats-io/nats.go/jetstream"
)

// goneArchive is a verified snapshot whose archive the object store no
// longer holds, and since when this instance knows it.
type goneArchive struct {
	m     contract.SnapshotManifest
	since time.Time
}

// archiveLookupTimeout bounds one look at an archive's metadata.
const archiveLookupTimeout = 5 * time.Second

// archiveInfo reads archive obj's metadata in the object store (never its
// chunks: the watchdog's user may read only that).
func (s *Service) archiveInfo(ctx context.Context, obj string) (*jetstream.ObjectInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, archiveLookupTimeout)
	defer cancel()
	return s.assets.Snapshots.GetInfo(ctx, obj)
}

// archiveGone says the object store holds no archive obj; false when it
// does, or cannot tell, or obj is not known.
func (s *Service) archiveGone(ctx context.Context, obj string) bool {
	if obj == "" {
		return false
	}
	_, err := s.archiveInfo(ctx, obj)
	return errors.Is(err, jetstream.ErrObjectNotFound)
}

// archiveLoop looks every verified snapshot's archive up every
// ArchiveCheckInterval (checkArchives).
func (s *Service) archiveLoop(ctx context.Context) {
	if s.cfg.ArchiveCheckInterval > 0 {
		every(ctx, s.cfg.ArchiveCheckInterval, func() { s.checkArchives(ctx) })
	}
}

// checkArchives finds the verified snapshots whose archive is gone from
// the object store: a manifest is written after its archive was stored
// and verified, and deleted before it, so such an archive was deleted or
// lost outside chromadb-rollback (nats object rm, a lost replica), and no
// rollback to the snapshot can run. Each newly found one is an audited
// alert (alert.archive_missing, once per snapshot however many watchdogs
// see it); the status lists them all. Nothing is paused: the migrations
// that rely on such a snapshot are refused when they start (usable).
func (s *Service) checkArchives(ctx context.Context) {
	var ms []contract.SnapshotManifest
	if err := bus.EachValue(ctx, s.assets.Manifests, ">", func(_ string, data []byte) error {
		var m contract.SnapshotManifest
		if json.Unmarshal(data, &m) == nil && !m.VerifiedAt.IsZero() && m.Object != "" {
			ms = append(ms, m)
		}
		return nil
	}); err != nil {
		if ctx.Err() == nil {
			s.log.Warn("cannot read the manifests to look their archives up", "err", err)
		}
		return
	}
	now := time.Now().UTC()
	found := map[string]goneArchive{}
	for _, m := range ms {
		if !s.archiveGone(ctx, m.Object) {
			continue
		}
		// Deleted meanwhile: the manifest goes first, then the archive.
		if _, err := s.assets.Manifests.Get(ctx, m.SnapshotID); err != nil {
			continue
		}
		found[m.SnapshotID] = goneArchive{m: m, since: now}
	}
	if ctx.Err() != nil {
		return
	}
	s.mu.Lock()
	var fresh []goneArchive
	for id, g := range found {
		if prev, ok := s.gone[id]; ok {
			found[id] = prev
		} else {
			fresh = append(fresh, g)
		}
	}
	s.gone = found
	s.mu.Unlock()
	slices.SortFunc(fresh, func(a, b goneArchive) int { return strings.Compare(a.m.SnapshotID, b.m.SnapshotID) })
	for _, g := range fresh {
		m := g.m
		why := fmt.Sprintf("the archive of snapshot %s (%s) of %s/%s, object %s, is missing from %s (deleted or lost outside chromadb-rollback): no rollback to it can run; take a new snapshot, then delete this one (snapshot delete)",
			m.SnapshotID, m.Name, m.Tenant, m.Database, m.Object, contract.ObjectSnapshots)
		s.log.Warn("alert raised", "alert", "archive_missing", "detail", why)
		s.observeTrigger("archive_missing")
		s.emit(ctx, "archive_missing_"+m.SnapshotID, contract.AuditEvent{Action: "alert.archive_missing", Outcome: contract.OutcomeAlert,
			SnapshotID: m.SnapshotID, Tenant: m.Tenant, Database: m.Database, Reason: why,
			Figures: map[string]any{"object": m.Object, "name": m.Name, "size": m.Size}})
	}
}

// archiveAlert is the status alert for the archives found gone, if any.
func (s *Service) archiveAlert() (contract.StatusAlert, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.gone) == 0 {
		return contract.StatusAlert{}, false
	}
	ids := slices.Sorted(maps.Keys(s.gone))
	since := s.gone[ids[0]].since
	for _, g := range s.gone {
		if g.since.Before(since) {
			since = g.since
		}
	}
	return contract.StatusAlert{Name: "archive_missing", Since: since, Figures: map[string]any{"snapshots": ids},
		Detail: missingText(ids)}, true
}

// missingText is the archive_missing alert's detail for the snapshots ids.
func missingText(ids []string) string {
	if len(ids) == 1 {
		return fmt.Sprintf("the archive of snapshot %s is missing from %s, so it cannot be restored (take a new snapshot, then delete this one)",
			ids[0], contract.ObjectSnapshots)
	}
	return fmt.Sprintf("the archives of %d snapshots are missing from %s, so they cannot be restored: %s (take new snapshots, then delete these)",
		len(ids), contract.ObjectSnapshots, strings.Join(ids, ", "))
}
