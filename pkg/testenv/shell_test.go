package testenv

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestShellWords(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{`nats req chroma.api.status ''`, []string{"nats", "req", "chroma.api.status", ""}},
		{`nats pub x '{"a": "b c"}'`, []string{"nats", "pub", "x", `{"a": "b c"}`}},
		{`a "b \"c\" \\ d" e`, []string{"a", `b "c" \ d`, "e"}},
		{`a  'it''s'	b`, []string{"a", "its", "b"}},
	} {
		got, err := ShellWords(tc.in)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("ShellWords(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	if _, err := ShellWords(`a 'b`); err == nil {
		t.Error("an unterminated quote was accepted")
	}
}

func TestShellBlocks(t *testing.T) {
	doc := "# Title\n\n## One\n\n```sh\n# a comment\nnats pub a 'x # y' # says hi\n\nchromadb-rollback status \\\n  --json\n```\n\nnot code\n\n## Two\n```sh\nnats sub b\n```\n```go\nnats not this\n```\n"
	path := filepath.Join(t.TempDir(), "doc.md")
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := ShellBlocks(path)
	if err != nil {
		t.Fatal(err)
	}
	want := []ShellLine{
		{Text: "nats pub a 'x # y'", Comment: "says hi", Section: "One", Block: 1, Line: 7},
		{Text: "chromadb-rollback status --json", Section: "One", Block: 1, Line: 9},
		{Text: "nats sub b", Section: "Two", Block: 2, Line: 17},
	}
	if !slices.Equal(got, want) {
		t.Errorf("ShellBlocks:\n got %+v\nwant %+v", got, want)
	}
	if err := os.WriteFile(path, []byte("```sh\nnats pub a \\\n```\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ShellBlocks(path); err == nil {
		t.Error("a continuation past the end of a block was accepted")
	}
}
