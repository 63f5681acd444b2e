package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/services/auditor"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
)

// auditPage is how many entries one query asks for when --limit is larger.
const auditPage = 1000

// auditFlags are the filters of audit-log, as typed.
type auditFlags struct {
	since, until, action, snapshot, job, outcome, service, op string
	limit                                                     int
	follow                                                    bool
}

func (a *app) auditLogCmd() *cobra.Command {
	var f auditFlags
	cmd := &cobra.Command{
		Use:   "audit-log",
		Short: "Show the audit trail, newest first; --follow tails it live",
		Long: `Query the auditor (chroma.api.audit.query) for trail entries, newest first.
--since and --until take an RFC 3339 time, a date (2025-11-30, UTC) or an
age such as 90m, 24h or 7d. --action takes an exact action or a prefix
ending in '*' (quote it: --action 'rollback*'). --follow prints the newest
entries oldest first, then every new event as the audit stream receives it,
until interrupted. --json prints one JSON entry per line.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req, err := f.request(time.Now(), cmd.Flags().Changed("limit"))
			if err != nil {
				return err
			}
			// The limit was checked above: the CLI pages through one
			// larger than a query's largest.
			vreq := req
			vreq.Limit = min(req.Limit, contract.MaxAuditQueryLimit)
			filter, field, err := auditor.NewFilter(vreq)
			if err != nil {
				return usageErr("--%s: %v", flagOf(field), err)
			}
			if f.snapshot != "" && !strings.HasPrefix(f.snapshot, "snap_") {
				// Every other command takes a snapshot's name too; events
				// carry its id, so a name finds only the requests that
				// gave it as written, not the snapshot's history.
				fmt.Fprintf(a.stderr, "warning: --snapshot %q is not a snapshot id (snap_...): events name snapshots by id, so only those that name it as written (refused requests) match; `chromadb-rollback snapshot info` of that name gives its id\n", f.snapshot)
			}
			nc, err := a.connect()
			if err != nil {
				return err
			}
			defer nc.Close()
			entries, rep, err := a.auditQuery(cmd.Context(), nc, req)
			if err != nil {
				return err
			}
			if !f.follow {
				a.printAuditEntries(entries, true)
				if rep.More {
					fmt.Fprintf(a.stderr, "showing the newest %d of %d matching entries; raise --limit for more\n", len(entries), rep.Matched)
				}
				a.warnTrail(rep)
				return nil
			}
			slices.Reverse(entries)
			a.printAuditEntries(entries, true)
			a.warnTrail(rep)
			return a.auditFollow(cmd.Context(), nc, filter, rep.TrailLastSeq+1, entries)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.since, "since", "", "only events at or after this time: RFC 3339, a date, or an age (24h, 7d)")
	fl.StringVar(&f.until, "until", "", "only events before this time")
	fl.StringVar(&f.action, "action", "", "exact action, or a prefix ending in '*' (e.g. 'rollback*')")
	fl.StringVar(&f.snapshot, "snapshot", "", "only events of this snapshot id")
	fl.StringVar(&f.job, "job", "", "only events of this migration job")
	fl.StringVar(&f.outcome, "outcome", "", "started, completed, failed, rejected or alert")
	fl.StringVar(&f.service, "service", "", "only events of this service (snapshotter, restorer, watchdog, ...)")
	fl.StringVar(&f.op, "op", "", "only events of this operation id")
	fl.IntVar(&f.limit, "limit", contract.DefaultAuditQueryLimit, "at most this many entries (with --follow, 10 unless set)")
	fl.BoolVar(&f.follow, "follow", false, "after the newest entries, print new events as they arrive, until interrupted")
	return cmd
}

// flagOf names the audit-log flag of a query field.
func flagOf(field string) string {
	switch field {
	case "snapshot_id":
		return "snapshot"
	case "op_id":
		return "op"
	}
	return field
}

// request turns the flags into a query; the limit is checked here, as the
// CLI pages through larger ones.
func (f *auditFlags) request(now time.Time, limitSet bool) (contract.AuditQueryRequest, error) {
	req := contract.AuditQueryRequest{Envelope: contract.NewEnvelope(contract.TypeAuditQueryRequest),
		Action: f.action, SnapshotID: f.snapshot, Job: f.job, Outcome: f.outcome, Service: f.service, OpID: f.op, Limit: f.limit}
	if f.follow && !limitSet {
		req.Limit = 10
	}
	if req.Limit <= 0 {
		return req, usageErr("--limit %d: give a positive number", req.Limit)
	}
	if f.follow && f.until != "" {
		return req, usageErr("--until and --follow exclude each other: following never ends")
	}
	for _, w := range []struct {
		flag, val string
		dst       **time.Time
	}{{"since", f.since, &req.Since}, {"until", f.until, &req.Until}} {
		if w.val == "" {
			continue
		}
		t, err := parseWhen(w.val, now)
		if err != nil {
			return req, usageErr("--%s: %v", w.flag, err)
		}
		*w.dst = &t
	}
	return req, nil
}

// parseWhen reads an RFC 3339 time, a date or date-time without a zone
// (UTC), or an age back from now (90m, 24h, 7d, 1d12h).
func parseWhen(s string, now time.Time) (time.Time, error) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02T15:04", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	age := s
	var days time.Duration
	if i := strings.IndexByte(s, 'd'); i > 0 {
		n, err := strconv.Atoi(s[:i])
		if err != nil {
			return time.Time{}, fmt.Errorf("%q is not a time or an age", s)
		}
		days, age = time.Duration(n)*24*time.Hour, s[i+1:]
	}
	var d time.Duration
	if age != "" {
		var err error
		if d, err = time.ParseDuration(age); err != nil {
			return time.Time{}, fmt.Errorf("%q is neither a time (2025-11-30T14:00:00Z, 2025-11-30) nor an age (90m, 24h, 7d)", s)
		}
	}
	if d+days < 0 {
		return time.Time{}, fmt.Errorf("age %q is negative", s)
	}
	return now.Add(-(d + days)).UTC(), nil
}

// warnTrail says on stderr that the trail read is not as the auditor
// wrote it, or holds lines that are not entries.
func (a *app) warnTrail(rep contract.AuditQueryReply) {
	if rep.Warning != "" {
		fmt.Fprintf(a.stderr, "warning: %s\n", rep.Warning)
	}
	if rep.Unreadable > 0 {
		fmt.Fprintf(a.stderr, "warning: %s of the trail are not entries and were skipped\n", counted(rep.Unreadable, "line"))
	}
}

// auditQuery asks for up to req.Limit entries, newest first, a page at a
// time; the reply returned is the first page's (Matched, TrailLastSeq).
func (a *app) auditQuery(ctx context.Context, nc *nats.Conn, req contract.AuditQueryRequest) ([]contract.AuditQueryEntry, contract.AuditQueryReply, error) {
	want := req.Limit
	var out []contract.AuditQueryEntry
	var first contract.AuditQueryReply
	for page := 0; ; page++ {
		req.Limit = min(want-len(out), auditPage)
		var rep contract.AuditQueryReply
		if err := a.request(ctx, nc, a.subj.API("audit", "query"), req, &rep, 0); err != nil {
			var ae *apiError
			if errors.As(err, &ae) && ae.Code == contract.CodeBadRequest {
				return nil, first, &exitError{code: exitUsage, err: err}
			}
			return nil, first, err
		}
		if page == 0 {
			first = rep
		}
		out = append(out, rep.Entries...)
		first.More = rep.More
		if !rep.More || len(out) >= want || len(rep.Entries) == 0 {
			return out, first, nil
		}
		req.BeforeSeq = rep.NextBeforeSeq
	}
}

// auditFollow prints the stream's events from seq start on as they come,
// skipping events already printed, until ctx ends.
func (a *app) auditFollow(ctx context.Context, nc *nats.Conn, filter *auditor.Filter, start uint64, printed []contract.AuditQueryEntry) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	// Gone from the stream soon after this ends, not the client's default
	// five minutes later.
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{a.subj.AuditAll()}, InactiveThreshold: 30 * time.Second}
	if start > 1 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, start
	}
	cons, err := js.OrderedConsumer(ctx, contract.StreamAudit, cfg)
	if err != nil {
		return fmt.Errorf("follow %s: %w", contract.StreamAudit, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("follow %s: %w", contract.StreamAudit, err)
	}
	defer it.Stop()
	// The connection's losses and returns go to stderr as they happen;
	// the ordered consumer goes on after the last event it delivered.
	var wg sync.WaitGroup
	stop := make(chan struct{})
	defer wg.Wait()
	defer close(stop)
	wg.Go(func() {
		for {
			select {
			case e := <-a.connEvents:
				fmt.Fprintln(a.stderr, e.text("Following resumes after the last event printed once it is back."))
			case <-stop:
				return
			}
		}
	})
	seen := map[string]bool{}
	for _, e := range printed {
		seen[eventIDOf(e.Event)] = true
	}
	for {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("follow %s: %w", contract.StreamAudit, err)
		}
		meta, err := m.Metadata()
		if err != nil {
			return err
		}
		e := auditor.NewEntry(meta.Sequence.Stream, meta.Timestamp, m.Subject(), m.Data())
		if id := eventIDOf(e.Event); id != "" {
			if seen[id] {
				continue
			}
			seen[id] = true
		}
		if filter.Match(&e) {
			a.printAuditEntries([]contract.AuditQueryEntry{{AuditTrailEntry: e}}, false)
		}
	}
}

func eventIDOf(event json.RawMessage) string {
	var v struct {
		ID string `json:"id"`
	}
	if json.Unmarshal(event, &v) != nil {
		return ""
	}
	return v.ID
}

const auditRow = "%-24s %7s  %-12s %-24s %-10s %-18s %s\n"

// printAuditEntries prints entries as rows (a header first when header is
// set and there are entries), or one JSON object per line with --json.
func (a *app) printAuditEntries(entries []contract.AuditQueryEntry, header bool) {
	if a.json {
		for _, e := range entries {
			b, _ := json.Marshal(e)
			fmt.Fprintf(a.stdout, "%s\n", b)
		}
		return
	}
	if header {
		if len(entries) == 0 {
			fmt.Fprintln(a.stdout, "no matching audit entries")
			return
		}
		fmt.Fprintf(a.stdout, auditRow, "TIME", "SEQ", "SERVICE", "ACTION", "OUTCOME", "ACTOR", "DETAIL")
	}
	for _, e := range entries {
		writeAuditRow(a.stdout, &e.AuditTrailEntry)
	}
}

func writeAuditRow(w io.Writer, e *contract.AuditTrailEntry) {
	if e.Event == nil || e.Event[0] != '{' {
		fmt.Fprintf(w, auditRow, e.Stored.Format(time.RFC3339), strconv.FormatUint(e.Seq, 10), "-", e.Subject, "-", "-", fmt.Sprintf("not an audit event: %q", clipText(string(e.Raw)+string(e.Event))))
		return
	}
	var ev contract.AuditEvent
	_ = json.Unmarshal(e.Event, &ev) // best effort: print what decodes
	at := ev.Time
	if at.IsZero() {
		at = e.Stored
	}
	var detail []string
	for _, kv := range [][2]string{{"snapshot", ev.SnapshotID}, {"op", ev.OpID}, {"job", figure(&ev, "job")},
		{"collection", figure(&ev, "collection")}, {"error", ev.Error}, {"reason", ev.Reason}} {
		if kv[1] != "" {
			detail = append(detail, kv[0]+"="+clipText(kv[1]))
		}
	}
	fmt.Fprintf(w, auditRow, at.UTC().Format(time.RFC3339), strconv.FormatUint(e.Seq, 10), dash(oneLine(ev.Service)), dash(oneLine(ev.Action)),
		dash(oneLine(ev.Outcome)), dash(oneLine(ev.Actor)), strings.Join(detail, " "))
}

// figure is the event's figure key when it is a string: the job, or the
// collection a rollback step is about ("collection restored" twice says
// nothing without it).
func figure(ev *contract.AuditEvent, key string) string {
	if v, ok := ev.Figures[key].(string); ok {
		return v
	}
	return ""
}

// clipText puts s on one line of at most 120 characters, cut between
// characters, never inside one.
func clipText(s string) string {
	s = oneLine(s)
	if utf8.RuneCountInString(s) <= 120 {
		return s
	}
	return string([]rune(s)[:117]) + "..."
}

func (a *app) auditCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Check the audit trail",
		Args:  cobra.ArbitraryArgs,
		RunE:  groupRunE,
	}
	var file string
	verify := &cobra.Command{
		Use:   "verify",
		Short: "Verify the audit trail's hash chain and that it agrees with the audit stream",
		Long: `Ask the auditor (chroma.api.audit.verify) to check every line of the trail
against its hash and the one before it, that the trail ends where the auditor
wrote it, and that it holds every message of the audit stream at its sequence
with the same content. Exits 3 when it does not verify, naming the first bad
entry by line and stream sequence. --file checks a copy of a trail offline
(the chain only: cut-off lines at the end and the stream need the auditor).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var rep contract.AuditVerifyReport
			if file != "" {
				// A path that names no readable file is a mistake to fix,
				// not a trail that failed verification: exit 3 would read
				// as evidence of tampering.
				fi, err := os.Stat(file)
				if err != nil {
					return fmt.Errorf("--file: %w; nothing was verified", err)
				}
				if fi.IsDir() {
					return fmt.Errorf("--file %s is a directory: give a copy of the trail file (rollback_audit.jsonl); nothing was verified", file)
				}
				rep = auditor.VerifyFile(file)
			} else {
				nc, err := a.connect()
				if err != nil {
					return err
				}
				defer nc.Close()
				req := contract.AuditVerifyRequest{Envelope: contract.NewEnvelope(contract.TypeAuditVerifyRequest), Actor: a.actor}
				if err := a.request(cmd.Context(), nc, a.subj.API("audit", "verify"), req, &rep, max(a.timeout, 10*time.Minute)); err != nil {
					return err
				}
			}
			if a.json {
				if err := a.printJSON(rep); err != nil {
					return err
				}
			} else {
				printAuditVerify(a.stdout, &rep)
			}
			if !rep.OK {
				return &exitError{code: exitVerification, err: fmt.Errorf("audit trail verification failed: %s", rep.Problem)}
			}
			return nil
		},
	}
	verify.Flags().StringVar(&file, "file", "", "verify this copy of a trail offline instead of asking the auditor")
	cmd.AddCommand(verify)
	return cmd
}

func printAuditVerify(w io.Writer, r *contract.AuditVerifyReport) {
	mark := "OK"
	if !r.OK {
		mark = "FAILED"
	}
	fmt.Fprintf(w, "%s: trail %s: %d entries, seq %d to %d, last hash %s\n", mark, r.Trail, r.Lines, r.FirstSeq, r.LastSeq, r.LastHash)
	if s := r.Stream; s != nil {
		fmt.Fprintf(w, "stream %s seq %d to %d: %d checked: %d match, %d repeat an event id (written once), %d mismatched, %d missing, %d pending, %d expired\n",
			contract.StreamAudit, s.FirstSeq, s.LastSeq, s.Checked, s.Matched, s.Duplicates, s.Mismatched, s.Missing, s.Pending, s.Expired)
	} else {
		fmt.Fprintln(w, "offline: the chain only; the running auditor also checks the end of the trail and the stream")
	}
	for _, p := range r.Problems {
		fmt.Fprintf(w, "  %s\n", p)
	}
}
