package testenv_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
)

// With TEST_ARTIFACTS set, Logger writes the test's log file under
// logs/<package>/ and tees into the writers given; SaveAudit appends each
// audit message once however often the stream is read.
func TestArtifacts(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(testenv.ArtifactsEnv, dir)
	t.Setenv("TEST_LOG", "")

	var buf bytes.Buffer
	testenv.Logger(t, &buf).Debug("first", "k", 1)
	testenv.Logger(t).Info("second")
	path := filepath.Join(dir, "logs", "pkg", "testenv", "TestArtifacts.log")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("the test's log file: %v", err)
	}
	if got := string(data); !strings.Contains(got, "msg=first k=1") || !strings.Contains(got, "msg=second") {
		t.Errorf("log file:\n%s\nwant both records", got)
	}
	if !strings.Contains(buf.String(), "msg=first") || strings.Contains(buf.String(), "second") {
		t.Errorf("tee buffer:\n%s\nwant the first record only", buf.String())
	}

	msgs := []testenv.AuditMessage{
		{Seq: 1, Subject: "chroma.audit.snapshotter.snapshot_create", Data: []byte(`{"id":"a"}`)},
		{Seq: 2, Subject: "chroma.audit.x.y", Data: []byte("not json")},
	}
	testenv.SaveAudit(t, msgs[:1])
	testenv.SaveAudit(t, msgs)
	f, err := os.Open(filepath.Join(dir, "audit", "pkg", "testenv", "TestArtifacts.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []map[string]any
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("audit artifact line %q: %v", sc.Text(), err)
		}
		lines = append(lines, m)
	}
	if len(lines) != 2 {
		t.Fatalf("%d audit artifact lines, want 2: %v", len(lines), lines)
	}
	if ev, _ := lines[0]["event"].(map[string]any); ev["id"] != "a" || lines[0]["test"] != "TestArtifacts" {
		t.Errorf("line 1 = %v, want the event with the test's name", lines[0])
	}
	if lines[1]["raw"] != "not json" {
		t.Errorf("line 2 = %v, want the raw message", lines[1])
	}

	sub := testenv.ArtifactDir(t, "trails")
	if !strings.HasPrefix(sub, filepath.Join(dir, "trails", "pkg", "testenv")+string(filepath.Separator)) {
		t.Errorf("ArtifactDir = %s, want a directory under %s", sub, dir)
	}
}

// Without TEST_ARTIFACTS nothing is written and Logger discards.
func TestNoArtifacts(t *testing.T) {
	t.Setenv(testenv.ArtifactsEnv, "")
	t.Setenv("TEST_LOG", "")
	if testenv.Logger(t).Handler().Enabled(t.Context(), 12) {
		t.Error("Logger without artifacts or TEST_LOG does not discard")
	}
	testenv.SaveAudit(t, []testenv.AuditMessage{{Seq: 1, Data: []byte("{}")}})
	if d := testenv.ArtifactDir(t, "trails"); !strings.HasPrefix(d, os.TempDir()) {
		t.Errorf("ArtifactDir = %s, want a temporary directory", d)
	}
}

func TestSecret(t *testing.T) {
	a, b := testenv.Secret("nats"), testenv.Secret("nats")
	if !strings.HasPrefix(a, testenv.SecretMarker+"nats") || len(a) != len(testenv.SecretMarker)+4+32 || a == b {
		t.Errorf("Secret = %q, %q: want fresh marked secrets", a, b)
	}
}

// The auth proxy lets the token through in either header, refuses others
// with Chroma's 401, and Deny refuses chosen requests whatever the token.
func TestChromaAuthProxy(t *testing.T) {
	var hits atomic.Int64
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.Header.Get("X-Chroma-Token") != "" || r.Header.Get("Authorization") != "" {
			t.Errorf("the token reached Chroma")
		}
		_, _ = w.Write([]byte(`"1.0.0"`))
	}))
	t.Cleanup(backend.Close)
	token := testenv.Secret("chroma")
	p := testenv.StartChromaAuthProxy(t, backend.URL, token)
	get := func(header, value string) int {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, p.URL+"/api/v2/version", nil)
		if header != "" {
			req.Header.Set(header, value)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, tc := range []struct {
		header, value string
		want          int
	}{
		{"X-Chroma-Token", token, 200},
		{"Authorization", "Bearer " + token, 200},
		{"", "", 401},
		{"X-Chroma-Token", token + "x", 401},
		{"Authorization", token, 401},
	} {
		if got := get(tc.header, tc.value); got != tc.want {
			t.Errorf("%s %q: %d, want %d", tc.header, tc.value, got, tc.want)
		}
	}
	p.Deny(func(r *http.Request) bool { return strings.HasSuffix(r.URL.Path, "/version") })
	if got := get("X-Chroma-Token", token); got != 401 {
		t.Errorf("denied request: %d, want 401", got)
	}
	p.Deny(nil)
	p.SetToken("other")
	if got := get("X-Chroma-Token", token); got != 401 {
		t.Errorf("revoked token: %d, want 401", got)
	}
	if p.Passed() != 2 || p.Refused() != 5 || hits.Load() != 2 {
		t.Errorf("passed %d, refused %d, upstream hits %d; want 2, 5, 2", p.Passed(), p.Refused(), hits.Load())
	}
}
