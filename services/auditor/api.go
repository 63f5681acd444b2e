package auditor

import (
	"context"
	"fmt"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/bus"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/disk"
	"github.com/nats-io/nats.go/micro"
)

// verifyTimeout bounds one verify: it reads the whole trail and stream.
const verifyTimeout = 10 * time.Minute

func (s *Service) handleQuery(_ context.Context, r micro.Request) {
	var q contract.AuditQueryRequest
	if len(r.Data()) > 0 { // an empty request asks for the newest entries
		if code, msg := bus.DecodeRequest(r, &q); code != 0 {
			bus.RespondError(r, code, msg, "")
			return
		}
	}
	// The reply must fit in one message, with room for headers.
	maxBytes := int(s.nc.MaxPayload()) - 16<<10
	rep, field, err := s.query(q, maxBytes)
	switch {
	case field != "":
		bus.RespondError(r, contract.CodeBadRequest, err.Error(), field)
	case err != nil:
		bus.RespondError(r, contract.CodeInternal, err.Error(), "")
	default:
		bus.RespondJSON(r, rep)
	}
}

func (s *Service) handleVerify(ctx context.Context, r micro.Request) {
	var req contract.AuditVerifyRequest
	if len(r.Data()) > 0 { // an empty request is fine
		if code, msg := bus.DecodeRequest(r, &req); code != 0 {
			bus.RespondError(r, code, msg, "")
			return
		}
	}
	vctx, cancel := context.WithTimeout(ctx, verifyTimeout)
	defer cancel()
	start := time.Now()
	rep := s.verify(vctx)
	s.log.Info("trail verified", "ok", rep.OK, "lines", rep.Lines, "problem", rep.Problem, "actor", req.Actor, "took", time.Since(start).Round(time.Millisecond))
	bus.RespondJSON(r, rep)
}

func (s *Service) handleHealth(ctx context.Context, r micro.Request) {
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	bus.RespondJSON(r, s.Health(hctx))
}

// Health reports whether the trail is being written, how far behind the
// stream it is, and the free space where it lives.
func (s *Service) Health(ctx context.Context) contract.Health {
	h := contract.Health{Envelope: contract.NewEnvelope(contract.TypeHealth), OK: true}
	add := func(name string, err error, detail string) {
		c := contract.HealthCheck{Name: name, OK: err == nil, Detail: detail}
		if err != nil {
			c.Detail = err.Error()
			h.OK = false
		}
		h.Checks = append(h.Checks, c)
	}
	s.mu.Lock()
	trail := s.trail
	s.mu.Unlock()
	if trail == nil {
		add("audit_trail", fmt.Errorf("the auditor has not opened its trail yet"), "")
		return h
	}
	st := s.Stats()
	head := trail.Head()
	var werr error
	if st.WriteError != "" {
		werr = fmt.Errorf("trail %s not written: %s", s.trail.Path(), st.WriteError)
	}
	add("audit_trail", werr, fmt.Sprintf("%s: %d entries through seq %d", s.trail.Path(), head.Lines, head.LastSeq))
	var lerr error
	detail := ""
	if cons := s.consumer(); cons == nil {
		lerr = fmt.Errorf("consumer %s not running", s.cfg.Consumer)
	} else if ci, err := cons.Info(ctx); err != nil {
		lerr = fmt.Errorf("consumer %s: %w", s.cfg.Consumer, err)
	} else {
		detail = fmt.Sprintf("%d audit events not yet in the trail", ci.NumPending+uint64(ci.NumAckPending))
	}
	add("audit_lag", lerr, detail)
	free, err := disk.Free(s.cfg.DataDir)
	add("audit_disk_free", err, fmt.Sprintf("%d MiB free under %s", free>>20, s.cfg.DataDir))
	return h
}
