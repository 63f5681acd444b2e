package snapshotter

import (
	"context"
	"errors"
	"net/url"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/archive"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/bus"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/metrics"
)

// metricsService labels the snapshotter's failures.
const metricsService = "snapshotter"

// observeJob records how a snapshot job ended: its duration, and its
// records and archive bytes when it completed, or its failure's reason.
func (s *Service) observeJob(cmd *contract.SnapshotCommand, m *contract.SnapshotManifest, took time.Duration, err error) {
	op := metrics.Op{Tenant: cmd.Tenant, Database: cmd.Database, Outcome: metrics.OutcomeCompleted, Duration: took}
	if err != nil || m == nil {
		op.Outcome = metrics.OutcomeFailed
		s.cfg.Metrics.Failure(metricsService, "snapshot.create", failureReason(err))
	} else {
		op.Tenant, op.Database, op.Records, op.Bytes = m.Tenant, m.Database, m.TotalRecords, m.Size
	}
	s.cfg.Metrics.Snapshot(op)
}

// observeRefusal counts a refused request by its error code.
func (s *Service) observeRefusal(action string, code int) {
	s.cfg.Metrics.Failure(metricsService, action, metrics.CodeReason(code))
}

// observeVerifyFailed counts a stored snapshot that failed verification.
func (s *Service) observeVerifyFailed() {
	s.cfg.Metrics.Failure(metricsService, "snapshot.verify", metrics.ReasonVerification)
}

// failureReason classifies a failed job for the metrics: a few fixed
// values, never the error's text.
func failureReason(err error) string {
	var apiErr *chroma.APIError
	var urlErr *url.Error
	switch {
	case err == nil:
		return metrics.ReasonError
	case errors.Is(err, bus.ErrGivenUp):
		return metrics.ReasonGivenUp
	case errors.Is(err, archive.ErrChecksumMismatch), errors.Is(err, archive.ErrTruncated), errors.Is(err, archive.ErrCorrupt):
		return metrics.ReasonVerification
	case errors.As(err, &apiErr), errors.Is(err, chroma.ErrNotFound), errors.As(err, &urlErr):
		return metrics.ReasonChroma // the snapshotter speaks HTTP only to Chroma
	case errors.Is(err, context.DeadlineExceeded):
		return metrics.ReasonTimeout
	}
	return metrics.ReasonError
}
