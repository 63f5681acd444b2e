package auditor

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
)

// Filter is a validated AuditQueryRequest's filters. The CLI's --follow
// applies the same one to live messages.
type Filter struct {
	q      contract.AuditQueryRequest
	prefix bool // q.Action ends in '*'
}

// NewFilter validates q.
func NewFilter(q contract.AuditQueryRequest) (*Filter, string, error) {
	if field, err := q.Validate(); err != nil {
		return nil, field, err
	}
	f := &Filter{q: q}
	if strings.HasSuffix(q.Action, "*") {
		f.prefix = true
		f.q.Action = strings.TrimSuffix(q.Action, "*")
	}
	return f, "", nil
}

// eventKeys are the fields of an event that queries filter on.
type eventKeys struct {
	Time       string                     `json:"time"`
	Service    string                     `json:"service"`
	Action     string                     `json:"action"`
	Outcome    string                     `json:"outcome"`
	SnapshotID string                     `json:"snapshot_id"`
	OpID       string                     `json:"op_id"`
	Job        string                     `json:"job"`
	Figures    map[string]json.RawMessage `json:"figures"`
}

// keysOf reads the filter fields of an entry's event; a field of an
// unexpected JSON type reads as empty.
func keysOf(e *contract.AuditTrailEntry) (k eventKeys, at time.Time) {
	at = e.Stored
	if len(e.Event) == 0 || e.Event[0] != '{' {
		return k, at
	}
	_ = json.Unmarshal(e.Event, &k) // best effort: a mistyped field stays empty
	if t, err := time.Parse(time.RFC3339Nano, k.Time); err == nil {
		at = t
	}
	if k.Job == "" {
		if raw, ok := k.Figures["job"]; ok {
			_ = json.Unmarshal(raw, &k.Job)
		}
	}
	return k, at
}

// Match reports whether the entry's event passes every filter.
func (f *Filter) Match(e *contract.AuditTrailEntry) bool {
	q := &f.q
	k, at := keysOf(e)
	switch {
	case q.Since != nil && at.Before(*q.Since),
		q.Until != nil && !at.Before(*q.Until),
		q.Action != "" && !f.prefix && k.Action != q.Action,
		f.prefix && !strings.HasPrefix(k.Action, q.Action),
		q.Service != "" && k.Service != q.Service,
		q.SnapshotID != "" && k.SnapshotID != q.SnapshotID,
		q.OpID != "" && k.OpID != q.OpID,
		q.Job != "" && k.Job != q.Job,
		q.Outcome != "" && k.Outcome != q.Outcome:
		return false
	}
	return true
}

// queryResult is one match kept by a query.
type queryResult struct {
	line int
	e    contract.AuditTrailEntry
}

// query scans the written trail and returns the newest matches first. It
// keeps only the newest limit matches in memory, and stops adding entries
// to the reply at maxBytes of JSON.
func (s *Service) query(q contract.AuditQueryRequest, maxBytes int) (contract.AuditQueryReply, string, error) {
	f, field, err := NewFilter(q)
	if err != nil {
		return contract.AuditQueryReply{}, field, err
	}
	limit := q.Limit
	if limit == 0 {
		limit = contract.DefaultAuditQueryLimit
	}
	head := s.trail.Head()
	rep := contract.AuditQueryReply{Envelope: contract.NewEnvelope(contract.TypeAuditQueryReply), Entries: []contract.AuditQueryEntry{}, TrailLastSeq: head.LastSeq}
	// A trail changed under the auditor is read whole, not to where the
	// auditor wrote it (an edit moves every later line), and the reply
	// says it cannot be trusted.
	upTo := head.Size
	if err := s.trail.Unchanged(); err != nil {
		rep.Warning = fmt.Sprintf("%v: entries may be altered or missing; run audit verify (chroma.api.audit.verify) to see what changed", err)
		upTo = -1
	}
	file, err := os.Open(s.trail.Path())
	if err != nil {
		return rep, "", fmt.Errorf("open trail: %w", err)
	}
	defer file.Close()
	ring := make([]queryResult, 0, min(limit, 1024))
	next, line := 0, 0
	_, torn, err := scanLines(file, upTo, func(b []byte) {
		line++
		var e contract.AuditTrailEntry
		if json.Unmarshal(b, &e) != nil || e.Type != contract.TypeAuditTrailEntry {
			rep.Unreadable++
			return
		}
		if (q.BeforeSeq > 0 && e.Seq >= q.BeforeSeq) || !f.Match(&e) {
			return
		}
		rep.Matched++
		if len(ring) < limit {
			ring = append(ring, queryResult{line, e})
			return
		}
		ring[next] = queryResult{line, e}
		next = (next + 1) % limit
	})
	if err != nil {
		return rep, "", fmt.Errorf("read trail: %w", err)
	}
	if torn > 0 {
		rep.Unreadable++
	}
	// ring[next-1] is the newest once it wrapped; walk back from it.
	size := 512
	for i := range ring {
		r := ring[(next-1-i+2*len(ring))%len(ring)]
		b, _ := json.Marshal(r.e)
		if size += len(b) + 16; size > maxBytes && len(rep.Entries) > 0 {
			break
		}
		rep.Entries = append(rep.Entries, contract.AuditQueryEntry{Line: r.line, AuditTrailEntry: r.e})
	}
	if len(rep.Entries) < rep.Matched {
		rep.More = true
		rep.NextBeforeSeq = rep.Entries[len(rep.Entries)-1].Seq
	}
	return rep, "", nil
}
