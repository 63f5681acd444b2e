package contract

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Message types of the auditor: its trail lines and its API
// (chroma.api.audit.query, chroma.api.audit.verify).
const (
	TypeAuditTrailEntry    = "chromadb-rollback.v1.audit_trail_entry"
	TypeAuditQueryRequest  = "chromadb-rollback.v1.audit_query_request"
	TypeAuditQueryReply    = "chromadb-rollback.v1.audit_query_reply"
	TypeAuditVerifyRequest = "chromadb-rollback.v1.audit_verify_request"
	TypeAuditVerifyReport  = "chromadb-rollback.v1.audit_verify_report"
)

// AuditTrailFile is the trail's file name under the auditor's data dir
// (the name the seed tool used).
const AuditTrailFile = "rollback_audit.jsonl"

// AuditGenesisHash is the Prev of the trail's first entry.
const AuditGenesisHash = "0000000000000000000000000000000000000000000000000000000000000000"

// Query limits: the default and largest number of entries one query returns.
const (
	DefaultAuditQueryLimit = 100
	MaxAuditQueryLimit     = 10000
)

// AuditTrailEntry is one line of the trail: one message of the audit
// stream, chained to the line before it.
//
// Hash is the hex SHA-256 of the line's canonical JSON without the hash
// field: the fields in this order, no insignificant whitespace, no HTML
// escaping, Stored in UTC. Because that JSON holds Prev, each hash covers
// the previous entry's hash, so editing, deleting, inserting or moving a
// line breaks the chain at that line. The line itself is the same JSON
// with "hash" last.
type AuditTrailEntry struct {
	Type string `json:"type"`
	// Seq is the message's sequence in the audit stream.
	Seq uint64 `json:"seq"`
	// Stored is when the stream stored the message.
	Stored  time.Time `json:"stored"`
	Subject string    `json:"subject"`
	// Event is the message as published (an AuditEvent), compacted onto
	// one line. A message that is not JSON is kept in Raw instead; an
	// empty one has neither.
	Event json.RawMessage `json:"event,omitempty"`
	Raw   []byte          `json:"raw,omitempty"`
	// Prev is the Hash of the entry before, AuditGenesisHash for the first.
	Prev string `json:"prev"`
	Hash string `json:"hash,omitempty"`
}

// AuditOutcomes are the outcomes an audit event can have, and AuditServices
// the services that emit them (the audit event schema's enums).
var (
	AuditOutcomes = []string{OutcomeStarted, OutcomeCompleted, OutcomeFailed, OutcomeRejected, OutcomeAlert}
	AuditServices = []string{"snapshotter", "restorer", "watchdog", "auditor"}
)

// AuditQueryRequest asks chroma.api.audit.query for trail entries, newest
// (highest stream sequence) first. Every filter that is set must match.
type AuditQueryRequest struct {
	Envelope
	// Since (inclusive) and Until (exclusive) bound the event's time.
	Since *time.Time `json:"since,omitempty"`
	Until *time.Time `json:"until,omitempty"`
	// Action is an exact action ("rollback") or a prefix ending in '*'
	// ("rollback*" also matches "rollback.plan").
	Action     string `json:"action,omitempty"`
	Service    string `json:"service,omitempty"`
	SnapshotID string `json:"snapshot_id,omitempty"`
	OpID       string `json:"op_id,omitempty"`
	// Job matches the event's "job", or its figures' "job".
	Job     string `json:"job,omitempty"`
	Outcome string `json:"outcome,omitempty"`
	// Limit is DefaultAuditQueryLimit when 0, at most MaxAuditQueryLimit.
	Limit int `json:"limit,omitempty"`
	// BeforeSeq, when set, returns only entries with a lower sequence: the
	// next page after a reply's NextBeforeSeq.
	BeforeSeq uint64 `json:"before_seq,omitempty"`
	Actor     string `json:"actor,omitempty"`
}

// Validate reports the first invalid field and what to fix.
func (q *AuditQueryRequest) Validate() (field string, err error) {
	if q.Limit < 0 || q.Limit > MaxAuditQueryLimit {
		return "limit", fmt.Errorf("limit %d: give 1 to %d (0 means %d)", q.Limit, MaxAuditQueryLimit, DefaultAuditQueryLimit)
	}
	if q.Since != nil && q.Until != nil && !q.Until.After(*q.Since) {
		return "until", fmt.Errorf("until %s is not after since %s", q.Until.UTC().Format(time.RFC3339), q.Since.UTC().Format(time.RFC3339))
	}
	// A misspelt outcome would match nothing, which reads as "none".
	if o := q.Outcome; o != "" && !slices.Contains(AuditOutcomes, o) {
		return "outcome", fmt.Errorf("outcome %q: want one of %s", o, strings.Join(AuditOutcomes, ", "))
	}
	if v := q.Service; v != "" && !slices.Contains(AuditServices, v) {
		return "service", fmt.Errorf("service %q: want one of %s", v, strings.Join(AuditServices, ", "))
	}
	if a := q.Action; a != "" {
		if i := strings.IndexByte(a, '*'); i >= 0 && i != len(a)-1 {
			return "action", fmt.Errorf("action %q: '*' may only end a prefix, as in \"rollback*\"", a)
		}
		if strings.ContainsAny(a, " \t\r\n>") {
			return "action", fmt.Errorf("action %q may not contain whitespace or '>'", a)
		}
	}
	return "", nil
}

// AuditQueryEntry is a trail entry with its line number in the trail.
type AuditQueryEntry struct {
	Line int `json:"line,omitempty"`
	AuditTrailEntry
}

// AuditQueryReply answers chroma.api.audit.query.
type AuditQueryReply struct {
	Envelope
	// Entries match the filters, newest first.
	Entries []AuditQueryEntry `json:"entries"`
	// Matched counts every matching entry (below BeforeSeq), Limit aside.
	Matched int `json:"matched"`
	// More says older matching entries were left out (by Limit or by the
	// reply's size); ask again with BeforeSeq = NextBeforeSeq.
	More          bool   `json:"more"`
	NextBeforeSeq uint64 `json:"next_before_seq,omitempty"`
	// TrailLastSeq is the stream sequence the trail was written through
	// when the query ran: a follower continues from the one after it.
	TrailLastSeq uint64 `json:"trail_last_seq"`
	// Warning says the trail file is not as the auditor wrote it (edited,
	// appended to or replaced): the entries may be altered or missing, and
	// `audit verify` names what changed.
	Warning string `json:"warning,omitempty"`
	// Unreadable counts lines of the file that are not trail entries.
	Unreadable int `json:"unreadable,omitempty"`
}

// AuditVerifyRequest asks chroma.api.audit.verify to check the trail.
type AuditVerifyRequest struct {
	Envelope
	Actor string `json:"actor,omitempty"`
}

// Kinds of AuditProblem.
const (
	// AuditMalformed: the line is not a trail entry (not JSON, unknown
	// fields, wrong type, bad hash).
	AuditMalformed = "malformed"
	// AuditHashMismatch: the entry's content does not match its hash: the
	// line was edited.
	AuditHashMismatch = "hash_mismatch"
	// AuditNotCanonical: content and hash agree but the line is not as the
	// auditor writes it (reformatted, fields reordered).
	AuditNotCanonical = "not_canonical"
	// AuditChainBroken: the entry's prev is not the previous line's hash:
	// a line was deleted, inserted or moved before it.
	AuditChainBroken = "chain_broken"
	// AuditOutOfOrder: the sequence does not increase.
	AuditOutOfOrder = "out_of_order"
	// AuditDuplicate: the event id is already in an earlier entry.
	AuditDuplicate = "duplicate_event"
	// AuditIncomplete: the last line has no newline: the file was cut.
	AuditIncomplete = "incomplete_line"
	// AuditTruncated: the auditor wrote entries that the file no longer has.
	AuditTruncated = "truncated"
	// AuditRewritten: the last entry's hash is not the one the auditor wrote.
	AuditRewritten = "rewritten"
	// AuditExtraBytes: the file is longer than the auditor wrote it.
	AuditExtraBytes = "extra_bytes"
	// AuditReplaced: the path names another file than the one the auditor
	// appends to.
	AuditReplaced = "replaced"
	// AuditStreamMismatch: the entry differs from the stream's message at
	// its sequence.
	AuditStreamMismatch = "stream_mismatch"
	// AuditNotInStream: the entry's sequence is within the stream's range
	// but the stream has no such message.
	AuditNotInStream = "not_in_stream"
	// AuditMissing: a stream message the auditor acknowledged is in no entry.
	AuditMissing = "missing"
	// AuditUnreadable: the trail file could not be read.
	AuditUnreadable = "unreadable"
)

// AuditProblem is one thing wrong with the trail, at a line (1-based) and
// stream sequence when they are known.
type AuditProblem struct {
	Line   int    `json:"line,omitempty"`
	Seq    uint64 `json:"seq,omitempty"`
	Kind   string `json:"kind"`
	Detail string `json:"detail"`
}

// String names the entry and says what is wrong.
func (p AuditProblem) String() string {
	var at []string
	if p.Line > 0 {
		at = append(at, fmt.Sprintf("line %d", p.Line))
	}
	if p.Seq > 0 {
		at = append(at, fmt.Sprintf("seq %d", p.Seq))
	}
	if len(at) == 0 {
		return p.Kind + ": " + p.Detail
	}
	return strings.Join(at, ", ") + ": " + p.Kind + ": " + p.Detail
}

// AuditStreamCheck is how the trail compares with the audit stream.
type AuditStreamCheck struct {
	// FirstSeq and LastSeq are the stream's when the check began.
	FirstSeq uint64 `json:"first_seq"`
	LastSeq  uint64 `json:"last_seq"`
	// AckFloor is the auditor consumer's acknowledged sequence.
	AckFloor uint64 `json:"ack_floor"`
	// Checked stream messages, of which Matched an entry at their sequence,
	// Duplicates repeat an earlier entry's event id (written once),
	// Mismatched differ from their entry, Missing are in no entry though
	// acknowledged, and Pending are not written yet.
	Checked    int `json:"checked"`
	Matched    int `json:"matched"`
	Duplicates int `json:"duplicates"`
	Mismatched int `json:"mismatched"`
	Missing    int `json:"missing"`
	Pending    int `json:"pending"`
	// Expired entries are older than the stream's first message (MaxAge).
	Expired int `json:"expired"`
}

// AuditVerifyReport answers chroma.api.audit.verify.
type AuditVerifyReport struct {
	Envelope
	OK bool `json:"ok"`
	// Problem is the first problem in words; Problems lists them in trail
	// order (at most 100).
	Problem  string         `json:"problem,omitempty"`
	Problems []AuditProblem `json:"problems,omitempty"`
	Trail    string         `json:"trail"`
	Lines    int            `json:"lines"`
	FirstSeq uint64         `json:"first_seq"`
	LastSeq  uint64         `json:"last_seq"`
	LastHash string         `json:"last_hash"`
	// Stream is nil when the trail was checked on its own (offline).
	Stream *AuditStreamCheck `json:"stream,omitempty"`
}
