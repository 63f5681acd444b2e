package bus

import (
	"encoding/json"
	"sync"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/nats-io/nats.go"
)

// ProgressPublisher publishes an operation's progress on core NATS, at most
// every Interval except for phase changes and the final message.
type ProgressPublisher struct {
	nc       *nats.Conn
	subject  string
	opID     string
	Interval time.Duration

	mu        sync.Mutex
	start     time.Time
	last      time.Time
	lastPhase string
}

// NewProgressPublisher returns a publisher for opID.
func NewProgressPublisher(nc *nats.Conn, subj contract.Subjects, opID string) *ProgressPublisher {
	return &ProgressPublisher{nc: nc, subject: subj.Progress(opID), opID: opID, Interval: 250 * time.Millisecond, start: time.Now()}
}

// Update publishes p unless the last message was sent less than Interval ago
// in the same phase. Rate and ETA are derived here.
func (pp *ProgressPublisher) Update(p contract.Progress) {
	pp.mu.Lock()
	now := time.Now()
	if !p.Done && p.Error == "" && p.Phase == pp.lastPhase && now.Sub(pp.last) < pp.Interval {
		pp.mu.Unlock()
		return
	}
	pp.last, pp.lastPhase = now, p.Phase
	elapsed := now.Sub(pp.start).Seconds()
	pp.mu.Unlock()

	p.Envelope = contract.NewEnvelope(contract.TypeProgress)
	p.OpID = pp.opID
	if elapsed > 0 && p.DoneRecords > 0 {
		p.RatePerSec = float64(p.DoneRecords) / elapsed
		if p.TotalRecords > p.DoneRecords {
			p.ETASeconds = float64(p.TotalRecords-p.DoneRecords) / p.RatePerSec
		}
	}
	data, err := json.Marshal(p)
	if err != nil {
		return
	}
	_ = pp.nc.Publish(pp.subject, data) // progress is best effort by design
}
