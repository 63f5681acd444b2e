package testenv

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// ShellLine is one command of a markdown file's ```sh blocks.
type ShellLine struct {
	Text    string // the command, continuation lines joined, comment cut off
	Comment string // a trailing "# comment" outside quotes
	Section string // the last "## " heading above it
	Block   int    // which sh block it is in, from 1
	Line    int    // the line it starts on, from 1
}

// ShellBlocks returns the commands of the ```sh blocks of a markdown file
// in document order: blank and comment-only lines are skipped, a line
// ending in a backslash continues on the next. Docs whose commands tests
// run share this reading of them.
func ShellBlocks(path string) ([]ShellLine, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []ShellLine
	var cur *ShellLine
	var joined strings.Builder
	section, block, inSh := "", 0, false
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		raw := sc.Text()
		line := strings.TrimSpace(raw)
		switch {
		case !inSh && strings.HasPrefix(raw, "## "):
			section = strings.TrimSpace(strings.TrimPrefix(raw, "## "))
			continue
		case line == "```sh":
			inSh, block = true, block+1
			continue
		case strings.HasPrefix(line, "```"):
			if cur != nil {
				return nil, fmt.Errorf("%s:%d: a command continues past the end of its block", path, cur.Line)
			}
			inSh = false
			continue
		case !inSh || (cur == nil && (line == "" || strings.HasPrefix(line, "#"))):
			continue
		}
		if cur == nil {
			cur = &ShellLine{Section: section, Block: block, Line: n}
		}
		if cont, ok := strings.CutSuffix(line, `\`); ok {
			joined.WriteString(strings.TrimSpace(cont) + " ")
			continue
		}
		joined.WriteString(line)
		cur.Text, cur.Comment = cutComment(joined.String())
		out = append(out, *cur)
		cur = nil
		joined.Reset()
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if cur != nil {
		return nil, fmt.Errorf("%s:%d: a command continues past the end of the file", path, cur.Line)
	}
	return out, nil
}

// cutComment cuts a trailing " # comment" that is outside quotes.
func cutComment(line string) (string, string) {
	var quote rune
	for i, r := range line {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
		case r == '\'' || r == '"':
			quote = r
		case r == '#' && i > 0 && line[i-1] == ' ':
			return strings.TrimSpace(line[:i]), strings.TrimSpace(line[i+1:])
		}
	}
	return line, ""
}

// ShellWords splits a command line into arguments as a shell would for the
// quoting docs use: single quotes keep everything, double quotes keep
// everything but \" and \\; nothing is expanded.
func ShellWords(s string) ([]string, error) {
	var words []string
	var w strings.Builder
	inWord, escaped := false, false
	var quote rune
	for _, r := range s {
		switch {
		case escaped:
			w.WriteRune(r)
			escaped = false
		case quote == '"' && r == '\\':
			escaped = true
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			w.WriteRune(r)
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case r == ' ' || r == '\t':
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
		default:
			w.WriteRune(r)
			inWord = true
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("unterminated quote in %q", s)
	}
	if inWord {
		words = append(words, w.String())
	}
	return words, nil
}

// NatsCLI is the path of the pinned nats CLI in .tools/bin; a missing one
// fails the test with "run `make tools`".
func NatsCLI(tb testing.TB) string {
	tb.Helper()
	tools, err := ToolsDir()
	if err != nil {
		tb.Fatal(err)
	}
	bin := filepath.Join(tools, "bin", "nats")
	if _, err := os.Stat(bin); err != nil {
		tb.Fatalf("nats CLI not found at %s: run `make tools`", bin)
	}
	return bin
}
