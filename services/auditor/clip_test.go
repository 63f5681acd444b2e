package auditor

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

// TestClip: what a verify report quotes of a differing entry is cut
// between characters.
func TestClip(t *testing.T) {
	ev := json.RawMessage(`{"reason":"` + strings.Repeat("é", 100) + `"}`)
	got := clip(ev, nil)
	if !utf8.ValidString(got) || !strings.HasSuffix(got, "...") || len(got) > 163 {
		t.Errorf("clip = %q: want valid UTF-8 of at most 160 bytes and \"...\"", got)
	}
	if short := `{"a":1}`; clip(json.RawMessage(short), nil) != short {
		t.Errorf("a short event was changed: %q", clip(json.RawMessage(short), nil))
	}
}

// TestFieldDiff: a verify report names the field in which the trail's
// event and the stream's differ, however long the event.
func TestFieldDiff(t *testing.T) {
	long := strings.Repeat("x", 300)
	trail := json.RawMessage(`{"action":"rollback.start","detail":"` + long + `","outcome":"passed"}`)
	stream := json.RawMessage(`{"action":"rollback.start","detail":"` + long + `","outcome":"failed"}`)
	if got, want := fieldDiff(trail, stream), `event's "outcome" is "passed", the stream has "failed"`; got != want {
		t.Errorf("fieldDiff = %q, want %q", got, want)
	}
	if got := fieldDiff(json.RawMessage(`{"a":1}`), json.RawMessage(`{"a":1,"b":2}`)); got != `event has no "b", the stream has 2` {
		t.Errorf("a field only the stream has: %q", got)
	}
	if got := fieldDiff(json.RawMessage(`[1]`), json.RawMessage(`{"a":1}`)); got != "" {
		t.Errorf("not objects: %q, want none", got)
	}
}
