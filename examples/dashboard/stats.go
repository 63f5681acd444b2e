package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/auditschema"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
)

// Stats are the figures the dashboard shows, aggregated from audit events.
// They are also the state file: LastSeq is the last stream sequence counted.
type Stats struct {
	LastSeq uint64    `json:"last_seq"`
	Events  int       `json:"events"`
	Invalid int       `json:"invalid"` // events that do not match their schema (counted nowhere else)
	First   time.Time `json:"first,omitzero"`
	Last    time.Time `json:"last,omitzero"`
	// Rollbacks and Snapshots count operations that ended, by UTC day of
	// the event ("2006-01-02").
	Rollbacks map[string]*DayCount `json:"rollbacks_per_day"`
	Snapshots map[string]*DayCount `json:"snapshots_per_day"`
	// Triggers counts fired triggers by name (validation, time, failure).
	Triggers map[string]int `json:"triggers"`
	// Alerts counts raised alerts by name (connectivity, disk, rollback, ...).
	Alerts map[string]int `json:"alerts"`
	// Failures counts failed, rejected and alert events by
	// "<action> <outcome>: <error>", ids in the error replaced by <id>.
	Failures map[string]int `json:"failures_by_reason"`
}

// DayCount is one day's operations.
type DayCount struct {
	Completed int `json:"completed"`
	Failed    int `json:"failed"`
	// Automatic rollbacks were asked for by a watchdog trigger.
	Automatic int   `json:"automatic,omitempty"`
	Records   int64 `json:"records"`
}

// NewStats returns empty figures.
func NewStats() *Stats {
	return &Stats{Rollbacks: map[string]*DayCount{}, Snapshots: map[string]*DayCount{}, Triggers: map[string]int{},
		Alerts: map[string]int{}, Failures: map[string]int{}}
}

// Add counts the event stored at seq; it returns false for a sequence
// already counted (a message redelivered after a crash between saving the
// state and acknowledging it).
func (s *Stats) Add(seq uint64, data []byte) bool {
	if seq <= s.LastSeq {
		return false
	}
	s.LastSeq = seq
	s.Events++
	var ev contract.AuditEvent
	if err := auditschema.Validate(data); err != nil || json.Unmarshal(data, &ev) != nil {
		s.Invalid++
		return true
	}
	if s.First.IsZero() || ev.Time.Before(s.First) {
		s.First = ev.Time
	}
	if ev.Time.After(s.Last) {
		s.Last = ev.Time
	}
	day := ev.Time.UTC().Format(time.DateOnly)
	switch {
	case ev.Action == "rollback" && (ev.Outcome == contract.OutcomeCompleted || ev.Outcome == contract.OutcomeFailed):
		d := dayOf(s.Rollbacks, day)
		d.count(ev.Outcome, ev.Figures["records_written"])
		if _, ok := ev.Figures["job"]; ok {
			d.Automatic++
		}
	case ev.Action == "snapshot.create" && (ev.Outcome == contract.OutcomeCompleted || ev.Outcome == contract.OutcomeFailed):
		dayOf(s.Snapshots, day).count(ev.Outcome, ev.Figures["records"])
	case strings.HasPrefix(ev.Action, "trigger."):
		s.Triggers[strings.TrimPrefix(ev.Action, "trigger.")]++
	case strings.HasPrefix(ev.Action, "alert.") && ev.Outcome == contract.OutcomeAlert:
		s.Alerts[strings.TrimPrefix(ev.Action, "alert.")]++
	}
	switch ev.Outcome {
	case contract.OutcomeFailed, contract.OutcomeRejected, contract.OutcomeAlert:
		why := ev.Error
		if why == "" {
			why = ev.Reason
		}
		s.Failures[ev.Action+" "+ev.Outcome+": "+normalize(why)]++
	}
	return true
}

func dayOf(m map[string]*DayCount, day string) *DayCount {
	d := m[day]
	if d == nil {
		d = &DayCount{}
		m[day] = d
	}
	return d
}

func (d *DayCount) count(outcome string, records any) {
	if outcome == contract.OutcomeCompleted {
		d.Completed++
	} else {
		d.Failed++
	}
	if n, ok := records.(float64); ok { // JSON numbers decode as float64
		d.Records += int64(n)
	}
}

// ids are the identifiers that make otherwise equal errors differ.
var ids = regexp.MustCompile(`\b(snap|op|ret|op_rb|import)_[A-Za-z0-9_.=-]+|\b\d{8}T\d{6}Z_[0-9a-f]+\b`)

// normalize makes errors of one kind one key: ids replaced, one line, short.
func normalize(s string) string {
	s = ids.ReplaceAllString(strings.Join(strings.Fields(s), " "), "<id>")
	if r := []rune(s); len(r) > 120 {
		s = string(r[:119]) + "…"
	}
	return s
}

// Print writes the figures as text tables.
func (s *Stats) Print(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%d audit events through stream sequence %d", s.Events, s.LastSeq)
	if !s.First.IsZero() {
		fmt.Fprintf(&b, ", %s to %s", s.First.UTC().Format(time.RFC3339), s.Last.UTC().Format(time.RFC3339))
	}
	fmt.Fprintf(&b, "; %d not matching their schema\n\n", s.Invalid)

	fmt.Fprintf(&b, "%-23s  %9s  %6s  %9s  %15s\n", "rollbacks per day (UTC)", "completed", "failed", "automatic", "records written")
	for _, day := range slices.Sorted(maps.Keys(s.Rollbacks)) {
		d := s.Rollbacks[day]
		fmt.Fprintf(&b, "%-23s  %9d  %6d  %9d  %15d\n", day, d.Completed, d.Failed, d.Automatic, d.Records)
	}
	fmt.Fprintf(&b, "\n%-23s  %9s  %6s  %9s\n", "snapshots per day (UTC)", "completed", "failed", "records")
	for _, day := range slices.Sorted(maps.Keys(s.Snapshots)) {
		d := s.Snapshots[day]
		fmt.Fprintf(&b, "%-23s  %9d  %6d  %9d\n", day, d.Completed, d.Failed, d.Records)
	}
	fmt.Fprintf(&b, "\ntriggers fired: %s\nalerts raised: %s\n\n", counts(s.Triggers), counts(s.Alerts))

	fmt.Fprintf(&b, "%5s  %s\n", "count", "failures by reason")
	reasons := slices.Sorted(maps.Keys(s.Failures))
	slices.SortStableFunc(reasons, func(a, b string) int { return s.Failures[b] - s.Failures[a] })
	for _, r := range reasons {
		fmt.Fprintf(&b, "%5d  %s\n", s.Failures[r], r)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func counts(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}
