package watchdog

import (
	"context"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/metrics"
)

// storageTimeout bounds the storage figures of one status report.
const storageTimeout = 5 * time.Second

// observeTrigger counts a fired trigger (validation, time, failure) or a
// raised alert (connectivity, disk, jetstream_storage).
func (s *Service) observeTrigger(trigger string) {
	s.cfg.Metrics.Trigger(trigger)
}

// observeFailure counts something the watchdog had to do and could not:
// the pre-migration snapshot or a triggered rollback.
func (s *Service) observeFailure(operation string) {
	s.cfg.Metrics.Failure(auditService, operation, metrics.ReasonError)
}

// storage reads JetStream's use and the watched paths' free space for the
// status report.
func (s *Service) storage(ctx context.Context) *contract.StorageUse {
	ctx, cancel := context.WithTimeout(ctx, storageTimeout)
	defer cancel()
	return metrics.Storage(ctx, s.js, s.cfg.DiskPaths)
}
