package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/nats-io/nats.go/jetstream"
)

// Test artifacts: what the services log and audit during the tests, kept
// where a final check can grep it for secrets (`make test` does, see
// scripts/check-secrets.sh).

// ArtifactsEnv names the directory the tests write their artifacts to; unset,
// they write none. `make test` sets it to .artifacts/test.
const ArtifactsEnv = "TEST_ARTIFACTS"

// SecretMarker starts every secret the tests make (NATS passwords, Chroma
// tokens, URL credentials), so that a grep of the artifacts finds a leaked
// one without knowing its value.
const SecretMarker = "CRBSECRET"

// Secret returns a fresh random secret: SecretMarker, name (letters and
// digits, so that any config parser takes it as a plain string) and 32 hex
// digits.
func Secret(name string) string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return SecretMarker + name + hex.EncodeToString(b)
}

// ArtifactsDir is the artifacts directory, "" when TEST_ARTIFACTS is unset.
func ArtifactsDir() string {
	d := os.Getenv(ArtifactsEnv)
	if d == "" {
		return ""
	}
	if abs, err := filepath.Abs(d); err == nil {
		return abs
	}
	return d
}

// packageDir names the package under test by its directory below the repo
// root (e.g. "services/restorer"); tests run in their package's directory.
func packageDir() string {
	wd, err := os.Getwd()
	if err != nil {
		return "unknown"
	}
	if tools, err := ToolsDir(); err == nil {
		if rel, err := filepath.Rel(filepath.Dir(tools), wd); err == nil && !strings.HasPrefix(rel, "..") {
			return rel
		}
	}
	return filepath.Base(wd)
}

// fileName turns a test name into a file name: subtests and odd characters
// become underscores.
func fileName(name string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '.':
			return r
		}
		return '_'
	}, name)
}

// artifactPath is TEST_ARTIFACTS/kind/<package>/<test><ext> with its
// directory made, or "" when there are no artifacts.
func artifactPath(tb testing.TB, kind, ext string) string {
	base := ArtifactsDir()
	if base == "" {
		return ""
	}
	dir := filepath.Join(base, kind, packageDir())
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Logf("artifacts: %v", err)
		return ""
	}
	return filepath.Join(dir, fileName(tb.Name())+ext)
}

// ArtifactDir returns a fresh directory for files the test wants kept for
// the check, such as an auditor's trail: under TEST_ARTIFACTS/kind/<package>
// when it is set, else a temporary directory removed after the test.
func ArtifactDir(tb testing.TB, kind string) string {
	tb.Helper()
	base := ArtifactsDir()
	if base == "" {
		return tb.TempDir()
	}
	parent := filepath.Join(base, kind, packageDir())
	if err := os.MkdirAll(parent, 0o755); err != nil {
		tb.Fatalf("artifacts: %v", err)
	}
	dir, err := os.MkdirTemp(parent, fileName(tb.Name())+"-")
	if err != nil {
		tb.Fatalf("artifacts: %v", err)
	}
	return dir
}

// Logger returns the logger tests give services, at debug level: into the
// test's log file TEST_ARTIFACTS/logs/<package>/<test>.log when
// TEST_ARTIFACTS is set, to stderr when TEST_LOG is set, and into each of
// also (a buffer the test reads). With none of these it discards.
func Logger(tb testing.TB, also ...io.Writer) *slog.Logger {
	tb.Helper()
	opts := &slog.HandlerOptions{Level: slog.LevelDebug}
	var hs []slog.Handler
	if path := artifactPath(tb, "logs", ".log"); path != "" {
		// Every logger of the test appends to the same file; O_APPEND
		// keeps each record's single write whole.
		f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			tb.Fatalf("artifacts: %v", err)
		}
		tb.Cleanup(func() { f.Close() })
		hs = append(hs, slog.NewTextHandler(f, opts))
	}
	if os.Getenv("TEST_LOG") != "" {
		hs = append(hs, slog.NewTextHandler(os.Stderr, opts))
	}
	for _, w := range also {
		hs = append(hs, slog.NewTextHandler(w, opts))
	}
	switch len(hs) {
	case 0:
		return slog.New(slog.DiscardHandler)
	case 1:
		return slog.New(hs[0])
	}
	return slog.New(slog.NewMultiHandler(hs...))
}

// auditWritten is the highest stream sequence each test wrote to its audit
// artifact file, so that a test reading its stream several times records
// each message once.
var auditWritten = struct {
	sync.Mutex
	seq map[testing.TB]uint64
}{seq: map[testing.TB]uint64{}}

// auditArtifact is one line of an audit artifact file.
type auditArtifact struct {
	Test    string          `json:"test"`
	Seq     uint64          `json:"seq"`
	Subject string          `json:"subject"`
	Event   json.RawMessage `json:"event,omitempty"`
	Raw     string          `json:"raw,omitempty"` // a message that is not JSON
}

// SaveAudit appends msgs, in stream order, to the test's audit file
// TEST_ARTIFACTS/audit/<package>/<test>.jsonl (nothing when TEST_ARTIFACTS
// is unset), skipping those an earlier call wrote. ReadAudit and CheckAudit
// call it; StartNATS saves the whole stream when the test ends.
func SaveAudit(tb testing.TB, msgs []AuditMessage) {
	tb.Helper()
	path := artifactPath(tb, "audit", ".jsonl")
	if path == "" || len(msgs) == 0 {
		return
	}
	auditWritten.Lock()
	defer auditWritten.Unlock()
	last := auditWritten.seq[tb]
	var b strings.Builder
	for _, m := range msgs {
		if m.Seq != 0 && m.Seq <= last {
			continue
		}
		a := auditArtifact{Test: tb.Name(), Seq: m.Seq, Subject: m.Subject}
		if json.Valid(m.Data) {
			a.Event = m.Data
		} else {
			a.Raw = string(m.Data)
		}
		line, err := json.Marshal(a)
		if err != nil {
			tb.Logf("artifacts: %v", err)
			return
		}
		b.Write(line)
		b.WriteByte('\n')
		last = max(last, m.Seq)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		tb.Logf("artifacts: %v", err)
		return
	}
	defer f.Close()
	if _, err := f.WriteString(b.String()); err != nil {
		tb.Logf("artifacts: %v", err)
		return
	}
	auditWritten.seq[tb] = last
}

// saveAuditAtEnd registers a cleanup that saves the whole audit stream of
// js, once the services the test started after it have stopped. A stream
// that cannot be read then (the test shut its server down) is skipped.
func saveAuditAtEnd(tb testing.TB, js jetstream.JetStream) {
	if ArtifactsDir() == "" {
		return
	}
	tb.Cleanup(func() {
		msgs, err := readAuditStream(js)
		if err != nil {
			tb.Logf("artifacts: audit stream not saved: %v", err)
		}
		SaveAudit(tb, msgs)
	})
}

// readAuditStream reads every message of the audit stream with an ordered
// consumer, returning what it read before any error.
func readAuditStream(js jetstream.JetStream) ([]AuditMessage, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := js.Stream(ctx, contract.StreamAudit)
	if err != nil {
		return nil, err
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return nil, err
	}
	want := int(info.State.Msgs)
	if want == 0 {
		return nil, nil
	}
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return nil, err
	}
	out := make([]AuditMessage, 0, want)
	for len(out) < want {
		batch, err := cons.Fetch(want-len(out), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return out, err
		}
		got := len(out)
		for m := range batch.Messages() {
			am := AuditMessage{Subject: m.Subject(), Data: m.Data()}
			if md, err := m.Metadata(); err == nil {
				am.Seq = md.Sequence.Stream
			}
			_ = json.Unmarshal(m.Data(), &am.Event)
			out = append(out, am)
		}
		if len(out) == got {
			return out, fmt.Errorf("read %d of %d audit messages", got, want)
		}
	}
	return out, nil
}

// Report prints one figure as "<kind>: NAME value=X unit=U" (kind "load",
// say) on stdout, which go test shows with -v or when the test fails, and
// appends it to TEST_ARTIFACTS/figures.txt, which `make test` prints at
// the end: go test hides what a passing package prints.
func Report(kind, name string, v float64, unit string) {
	line := fmt.Sprintf("%s: %s value=%s unit=%s\n", kind, name, strconv.FormatFloat(v, 'f', -1, 64), unit)
	fmt.Print(line)
	base := ArtifactsDir()
	if base == "" {
		return
	}
	if err := os.MkdirAll(base, 0o755); err != nil {
		return
	}
	f, err := os.OpenFile(filepath.Join(base, "figures.txt"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	_, _ = f.WriteString(line)
}
