package testenv

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var (
	helpFlag = regexp.MustCompile(`(?m)^  -([a-z0-9-]+)`)
	// "(env NAME", "; env NAME" and "its token in NAME".
	helpEnv = regexp.MustCompile(`\b(?:env|in) ([A-Z][A-Z0-9]*_[A-Z0-9_]+|[A-Z]{4,}\b)`)
)

// CheckSettingsDocumented runs a service binary's run function with
// -help and fails tb for each flag, and each environment variable a flag's
// usage names, that deploy/README.md does not name in backquotes
// ("`--flag`", "`ENV`"), so a setting added to a service cannot go
// undocumented. The test calling it must not run in parallel.
func CheckSettingsDocumented(tb testing.TB, run func(context.Context, []string) error) {
	tb.Helper()
	var err error
	help := captureStderr(tb, func() { err = run(context.Background(), []string{"-help"}) })
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		tb.Fatalf("run -help: %v", err)
	}
	root, err := RepoRoot()
	if err != nil {
		tb.Fatal(err)
	}
	path := filepath.Join(root, "deploy", "README.md")
	data, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	doc := string(data)
	flags := helpFlag.FindAllStringSubmatch(help, -1)
	if len(flags) < 5 {
		tb.Fatalf("found %d flags in the help output, want the service's whole list:\n%s", len(flags), help)
	}
	for _, m := range flags {
		if name := "`--" + m[1] + "`"; !strings.Contains(doc, name) {
			tb.Errorf("%s does not document the flag %s", path, name)
		}
	}
	seen := map[string]bool{}
	for _, m := range helpEnv.FindAllStringSubmatch(help, -1) {
		if name := fmt.Sprintf("`%s`", m[1]); !seen[name] {
			seen[name] = true
			if !strings.Contains(doc, name) {
				tb.Errorf("%s does not document the environment variable %s", path, name)
			}
		}
	}
	if len(seen) < 3 {
		tb.Errorf("found %d environment variables in the help output (%v), want the service's whole list", len(seen), seen)
	}
}

// captureStderr returns what f writes to os.Stderr (a flag set's help).
func captureStderr(tb testing.TB, f func()) string {
	tb.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		tb.Fatal(err)
	}
	defer r.Close()
	old := os.Stderr
	os.Stderr = w
	out := make(chan []byte, 1)
	go func() {
		data, _ := io.ReadAll(r)
		out <- data
	}()
	func() {
		defer func() { // also when f ends the test (Goexit)
			os.Stderr = old
			_ = w.Close()
		}()
		f()
	}()
	return string(<-out)
}
