package restorer

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

// observeJob records how a rollback ended: its duration; the records it
// wrote and the archive bytes it read when it completed; else a failure
// with its reason.
func (s *Service) observeJob(tenant, database, status string, took time.Duration, sp *spec, rep *contract.RestoreReport, jobErr error) {
	op := metrics.Op{Tenant: tenant, Database: database, Duration: took}
	switch status {
	case contract.StatusCompleted:
		op.Outcome, op.Records = metrics.OutcomeCompleted, rep.RecordsWritten
		if sp != nil && sp.m != nil {
			op.Bytes = sp.m.Size
		}
	case contract.StatusCancelled:
		op.Outcome = metrics.OutcomeCancelled
	default:
		op.Outcome = metrics.OutcomeFailed
	}
	if op.Outcome != metrics.OutcomeCompleted {
		s.cfg.Metrics.Failure(auditService, "rollback", failureReason(jobErr))
	}
	s.cfg.Metrics.Restore(op)
}

// observeRefusal counts a refused request by its error code.
func (s *Service) observeRefusal(action string, code int) {
	s.cfg.Metrics.Failure(auditService, action, metrics.CodeReason(code))
}

// failureReason classifies a failed rollback for the metrics: a few fixed
// values, never the error's text.
func failureReason(err error) string {
	var apiErr *chroma.APIError
	var urlErr *url.Error
	switch {
	case err == nil:
		return metrics.ReasonError
	case errors.Is(err, bus.ErrGivenUp):
		return metrics.ReasonGivenUp
	case errors.Is(err, errCancelled):
		return metrics.ReasonCancelled
	case errors.Is(err, errLeaseLost):
		return metrics.ReasonLeaseLost
	case errors.Is(err, errVerify), errors.Is(err, errArchive), errors.Is(err, archive.ErrChecksumMismatch),
		errors.Is(err, archive.ErrTruncated), errors.Is(err, archive.ErrCorrupt):
		return metrics.ReasonVerification
	case errors.As(err, &apiErr), errors.Is(err, chroma.ErrNotFound), errors.As(err, &urlErr):
		return metrics.ReasonChroma // the restorer speaks HTTP only to Chroma
	case errors.Is(err, context.DeadlineExceeded):
		return metrics.ReasonTimeout
	}
	return metrics.ReasonError
}
