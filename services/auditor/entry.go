package auditor

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
)

// NewEntry makes the trail entry of one stream message, without its chain
// (Prev and Hash). The writer and verify both build entries this way, so
// "the same content" means byte-equal canonical JSON.
func NewEntry(seq uint64, stored time.Time, subject string, data []byte) contract.AuditTrailEntry {
	e := contract.AuditTrailEntry{Type: contract.TypeAuditTrailEntry, Seq: seq, Stored: stored.UTC(), Subject: subject}
	var buf bytes.Buffer
	if json.Valid(data) && json.Compact(&buf, data) == nil {
		e.Event = buf.Bytes()
	} else if len(data) > 0 {
		e.Raw = bytes.Clone(data)
	}
	return e
}

// encode writes e as canonical JSON with a trailing newline.
func encode(e *contract.AuditTrailEntry) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(e); err != nil {
		return nil, fmt.Errorf("encode trail entry seq %d: %w", e.Seq, err)
	}
	return buf.Bytes(), nil
}

// hashOf is the hex SHA-256 of e's canonical JSON without its hash.
func hashOf(e contract.AuditTrailEntry) (string, error) {
	e.Hash = ""
	b, err := encode(&e)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(bytes.TrimSuffix(b, []byte("\n")))
	return hex.EncodeToString(sum[:]), nil
}

// Chain sets e's Prev and Hash and returns its line, newline included.
func Chain(e *contract.AuditTrailEntry, prev string) ([]byte, error) {
	e.Prev = prev
	h, err := hashOf(*e)
	if err != nil {
		return nil, err
	}
	e.Hash = h
	return encode(e)
}

// contentDiff says how stream message s differs from trail entry t.
func contentDiff(t, s *contract.AuditTrailEntry) string {
	switch {
	case t.Subject != s.Subject:
		return fmt.Sprintf("subject %q, the stream has %q", t.Subject, s.Subject)
	case !t.Stored.Equal(s.Stored):
		return fmt.Sprintf("stored %s, the stream has %s", t.Stored.Format(time.RFC3339Nano), s.Stored.Format(time.RFC3339Nano))
	case !bytes.Equal(t.Event, s.Event) || !bytes.Equal(t.Raw, s.Raw):
		if d := fieldDiff(t.Event, s.Event); d != "" {
			return d
		}
		return fmt.Sprintf("event %s, the stream has %s", clip(t.Event, t.Raw), clip(s.Event, s.Raw))
	}
	return "content differs"
}

// fieldDiff names the first field (by name) in which two JSON objects
// differ, with both values: a whole event cut at 160 characters often
// stopped before it. "" when either is not an object.
func fieldDiff(t, s json.RawMessage) string {
	var tm, sm map[string]json.RawMessage
	if t == nil || s == nil || json.Unmarshal(t, &tm) != nil || json.Unmarshal(s, &sm) != nil {
		return ""
	}
	union := maps.Clone(tm)
	maps.Copy(union, sm)
	keys := slices.Sorted(maps.Keys(union))
	for _, k := range keys {
		tv, tok := tm[k]
		sv, sok := sm[k]
		switch {
		case !tok:
			return fmt.Sprintf("event has no %q, the stream has %s", k, clip(sv, nil))
		case !sok:
			return fmt.Sprintf("event has %q %s, the stream has none", k, clip(tv, nil))
		case !bytes.Equal(tv, sv):
			return fmt.Sprintf("event's %q is %s, the stream has %s", k, clip(tv, nil), clip(sv, nil))
		}
	}
	return ""
}

func clip(event json.RawMessage, raw []byte) string {
	s := string(event)
	if event == nil {
		s = fmt.Sprintf("raw %q", raw)
	}
	if len(s) > 160 {
		n := 160
		for n > 0 && !utf8.RuneStart(s[n]) { // cut between characters
			n--
		}
		s = s[:n] + "..."
	}
	return s
}

// errLine is a line that is not a trail entry.
var errLine = errors.New("not a trail entry")

// parseLine decodes one line (without its newline) and checks it against
// itself: known fields only, the right type, a hash that matches the
// content, and the canonical form. decoded says whether e holds the line's
// fields; kind and detail say what is wrong, if anything.
func parseLine(line []byte) (e contract.AuditTrailEntry, decoded bool, kind, detail string) {
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		return contract.AuditTrailEntry{}, false, contract.AuditMalformed, fmt.Sprintf("%v: %v", errLine, err)
	}
	if dec.More() {
		return contract.AuditTrailEntry{}, false, contract.AuditMalformed, fmt.Sprintf("%v: text after the JSON object", errLine)
	}
	e, kind, detail = checkEntry(line, e)
	return e, true, kind, detail
}

func checkEntry(line []byte, e contract.AuditTrailEntry) (contract.AuditTrailEntry, string, string) {
	if e.Type != contract.TypeAuditTrailEntry {
		return e, contract.AuditMalformed, fmt.Sprintf("type %q, want %q", e.Type, contract.TypeAuditTrailEntry)
	}
	if len(e.Hash) != sha256.Size*2 {
		return e, contract.AuditMalformed, fmt.Sprintf("hash %q is not a hex SHA-256", e.Hash)
	}
	canon, err := encode(&e)
	if err != nil {
		return e, contract.AuditMalformed, err.Error()
	}
	canon = canon[:len(canon)-1]
	if bytes.Equal(canon, line) {
		// The canonical line is the hashed JSON with ,"hash":"..." before
		// its closing brace: hash that prefix, no second encoding.
		cut := len(canon) - len(`,"hash":""}`) - len(e.Hash)
		content := append(canon[:cut:cut], '}')
		if sum := sha256.Sum256(content); hex.EncodeToString(sum[:]) == e.Hash {
			return e, "", ""
		}
	}
	want, err := hashOf(e)
	if err != nil {
		return e, contract.AuditMalformed, err.Error()
	}
	if want != e.Hash {
		return e, contract.AuditHashMismatch, fmt.Sprintf("content hashes to %s but the entry says %s: the line was edited", short(want), short(e.Hash))
	}
	return e, contract.AuditNotCanonical, "the line is not in the form the auditor writes (reformatted or reordered)"
}

// short abbreviates a hash for messages.
func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

// eventID returns the "id" of an event, "" when it has none.
func eventID(event json.RawMessage) string {
	if len(event) == 0 || event[0] != '{' {
		return ""
	}
	var v struct {
		ID json.RawMessage `json:"id"`
	}
	if json.Unmarshal(event, &v) != nil {
		return ""
	}
	var id string
	if json.Unmarshal(v.ID, &id) != nil {
		return ""
	}
	return id
}
