package metrics

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"
)

// Namespace prefixes every series of this project.
const Namespace = "chromadb_rollback"

// Outcomes of an operation (the outcome label).
const (
	OutcomeCompleted = "completed"
	OutcomeFailed    = "failed"
	OutcomeCancelled = "cancelled"
)

// durationBuckets spans a snapshot of a small database (seconds) to a
// rollback of a large one (hours).
var durationBuckets = []float64{0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400}

// Registry is one process's metrics and health checks. Create it with New;
// a nil *Registry is valid and records nothing.
type Registry struct {
	reg *prometheus.Registry

	snapshotDuration *prometheus.HistogramVec
	snapshotRecords  *prometheus.CounterVec
	snapshotBytes    *prometheus.CounterVec
	restoreDuration  *prometheus.HistogramVec
	restoreRecords   *prometheus.CounterVec
	restoreBytes     *prometheus.CounterVec
	failures         *prometheus.CounterVec
	triggers         *prometheus.CounterVec

	health    *health
	stateOnce sync.Once
}

// New returns a Registry with the project's series, the Go runtime's and
// the process's.
func New() *Registry {
	r := &Registry{reg: prometheus.NewRegistry(), health: &health{}}
	db := []string{"tenant", "database"}
	dbOutcome := []string{"tenant", "database", "outcome"}
	r.snapshotDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Name: "snapshot_duration_seconds",
		Help: "Time from taking a snapshot command to its end (archive stored, read back and verified, or failed).", Buckets: durationBuckets}, dbOutcome)
	r.snapshotRecords = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "snapshot_records_total",
		Help: "Records in completed snapshots."}, db)
	r.snapshotBytes = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "snapshot_bytes_total",
		Help: "Archive bytes stored by completed snapshots."}, db)
	r.restoreDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Name: "restore_duration_seconds",
		Help: "Time from taking a rollback command to its end (restored and verified, failed or cancelled).", Buckets: durationBuckets}, dbOutcome)
	r.restoreRecords = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "restore_records_total",
		Help: "Records written by completed rollbacks."}, db)
	r.restoreBytes = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "restore_bytes_total",
		Help: "Archive bytes read and verified by completed rollbacks."}, db)
	r.failures = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "operation_failures_total",
		Help: "Operations that failed or requests that were refused, by service, operation and reason."}, []string{"service", "operation", "reason"})
	r.triggers = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "watchdog_triggers_total",
		Help: "Watchdog triggers fired (validation, time, failure) and alerts raised (connectivity, disk, jetstream_storage)."}, []string{"trigger"})
	r.reg.MustRegister(r.snapshotDuration, r.snapshotRecords, r.snapshotBytes, r.restoreDuration, r.restoreRecords, r.restoreBytes,
		r.failures, r.triggers, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}

// Gatherer returns what the /metrics handler serves.
func (r *Registry) Gatherer() prometheus.Gatherer { return r.reg }

// Op is one snapshot or rollback that ended.
type Op struct {
	Tenant, Database string
	// Outcome is OutcomeCompleted, OutcomeFailed or OutcomeCancelled.
	Outcome  string
	Duration time.Duration
	// Records and Bytes are counted only for a completed operation.
	Records, Bytes int64
}

// Snapshot records a snapshot that ended.
func (r *Registry) Snapshot(op Op) {
	if r == nil {
		return
	}
	observe(op, r.snapshotDuration, r.snapshotRecords, r.snapshotBytes)
}

// Restore records a rollback that ended.
func (r *Registry) Restore(op Op) {
	if r == nil {
		return
	}
	observe(op, r.restoreDuration, r.restoreRecords, r.restoreBytes)
}

func observe(op Op, dur *prometheus.HistogramVec, records, bytes *prometheus.CounterVec) {
	dur.WithLabelValues(op.Tenant, op.Database, op.Outcome).Observe(op.Duration.Seconds())
	if op.Outcome != OutcomeCompleted {
		return
	}
	// Touch both, so a completed operation shows the series even at zero.
	records.WithLabelValues(op.Tenant, op.Database).Add(float64(max(op.Records, 0)))
	bytes.WithLabelValues(op.Tenant, op.Database).Add(float64(max(op.Bytes, 0)))
}

// Failure counts a failed operation or a refused request. reason must come
// from a small fixed set (an error class, never an error message): every
// distinct value is a series of its own.
func (r *Registry) Failure(service, operation, reason string) {
	if r == nil {
		return
	}
	r.failures.WithLabelValues(service, operation, reason).Inc()
}

// Trigger counts a watchdog trigger or alert.
func (r *Registry) Trigger(trigger string) {
	if r == nil {
		return
	}
	r.triggers.WithLabelValues(trigger).Inc()
}

// Value returns the value of the registry's series name{labels} (every
// label given), for tests and diagnostics; ok is false when it is absent.
func (r *Registry) Value(name string, labels map[string]string) (value float64, ok bool) {
	if r == nil {
		return 0, false
	}
	fams, err := r.reg.Gather()
	if err != nil {
		return 0, false
	}
	for _, f := range fams {
		if f.GetName() == name {
			return SeriesValue(f, labels)
		}
	}
	return 0, false
}

// SeriesValue returns the value of the series of f with exactly labels: a
// counter's or gauge's value, a histogram's sample count; ok is false when
// there is none.
func SeriesValue(f *dto.MetricFamily, labels map[string]string) (value float64, ok bool) {
next:
	for _, m := range f.GetMetric() {
		if len(m.GetLabel()) != len(labels) {
			continue
		}
		for _, l := range m.GetLabel() {
			if v, ok := labels[l.GetName()]; !ok || v != l.GetValue() {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}
