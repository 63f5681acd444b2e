package main

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// makeRunTree copies scripts/run.sh into a tree of its own, with a
// bin/chromadb-rollback that only records that serve was started and a
// Chroma package that cannot start, so that `make run`'s script runs
// without starting anything real.
func makeRunTree(t *testing.T) (script, served string) {
	t.Helper()
	root := t.TempDir()
	src, err := os.ReadFile("../../scripts/run.sh")
	if err != nil {
		t.Fatal(err)
	}
	served = filepath.Join(root, "served")
	files := map[string]string{
		"scripts/run.sh":        string(src),
		"bin/chromadb-rollback": "#!/bin/sh\necho \"CHROMA_URL=$CHROMA_URL $*\" > " + served + "\n",
		".tools/node_modules/chromadb-js-bindings-linux-x64-gnu/package.json": `{"name":"not-chroma","main":"missing.js"}`,
	}
	for name, body := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(root, "scripts/run.sh"), served
}

func runScript(t *testing.T, script string, env ...string) (int, string) {
	t.Helper()
	for _, tool := range []string{"bash", "curl", "node"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed to run scripts/run.sh: %v", tool, err)
		}
	}
	cmd := exec.Command("bash", script)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CHROMA_URL=") && !strings.HasPrefix(kv, "CHROMA_PORT=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("run.sh did not end within 60s:\n%s", out.String())
	}
	return cmd.ProcessState.ExitCode(), out.String()
}

// TestRunScriptRefusesABusyChromaPort: `make run` without CHROMA_URL starts
// its own Chroma. When something already answers on that port (8000 is
// Chroma's default: another Chroma is often there), its own server cannot
// bind, but the other one answered the readiness check and serve was
// started against it, to snapshot and roll back a server that was not
// the one announced. Now the script stops before starting anything,
// saying what to do; and a Chroma that fails to start stops it too.
func TestRunScriptRefusesABusyChromaPort(t *testing.T) {
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, `{"nanosecond heartbeat":1}`)
	}))
	defer other.Close()
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(other.URL, "http://"))

	script, served := makeRunTree(t)
	code, out := runScript(t, script, "CHROMA_PORT="+port)
	if b, err := os.ReadFile(served); err == nil {
		t.Fatalf("serve was started against the server already on port %s: %s\n%s", port, b, out)
	}
	if code == 0 || !strings.Contains(out, "127.0.0.1:"+port+" is in use") || !strings.Contains(out, "CHROMA_URL=http://127.0.0.1:"+port) {
		t.Errorf("run.sh with port %s in use: exit %d\n%s", port, code, out)
	}

	// A free port, and a Chroma that cannot start: no serve either.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, free, _ := net.SplitHostPort(ln.Addr().String())
	ln.Close()
	code, out = runScript(t, script, "CHROMA_PORT="+free)
	if _, err := os.Stat(served); err == nil || code == 0 || !strings.Contains(out, "chroma failed to start") {
		t.Errorf("run.sh with a Chroma that cannot start: exit %d, serve started: %v\n%s", code, err == nil, out)
	}
}
