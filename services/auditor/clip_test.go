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
