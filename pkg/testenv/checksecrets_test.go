package testenv_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
)

// scripts/check-secrets.sh, the last step of make test: it passes clean
// artifacts, fails naming file and line (and not the whole secret) for a
// marked secret or an age secret key, and fails when there are no
// artifacts at all, so that a broken TEST_ARTIFACTS cannot pass unseen.
func TestCheckSecretsScript(t *testing.T) {
	tools, err := testenv.ToolsDir()
	if err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(filepath.Dir(tools), "scripts", "check-secrets.sh")
	check := func(dir string) (int, string) {
		out, err := exec.Command(script, dir).CombinedOutput()
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), string(out)
		}
		if err != nil {
			t.Fatalf("%s: %v", script, err)
		}
		return 0, string(out)
	}
	write := func(path, text string) {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteString(text); err != nil {
			t.Fatal(err)
		}
	}

	dir := t.TempDir()
	if code, out := check(dir); code != 1 || !strings.Contains(out, "no logs") {
		t.Errorf("no artifacts: exit %d\n%s\nwant 1 saying there are no logs", code, out)
	}
	logFile := filepath.Join(dir, "logs", "pkg", "TestX.log")
	auditFile := filepath.Join(dir, "audit", "pkg", "TestX.jsonl")
	write(logFile, "level=INFO msg=\"snapshotter started\" chroma_url=http://ops:xxxxx@127.0.0.1:8000\n")
	write(auditFile, "{\"event\":{\"error\":\"need AGE-SECRET-KEY-1... lines\"}}\n")
	if code, out := check(dir); code != 0 {
		t.Errorf("clean artifacts: exit %d\n%s", code, out)
	}
	secret := testenv.Secret("chroma")
	write(logFile, "level=INFO msg=leak token="+secret+"\n")
	write(auditFile, "{\"raw\":\"AGE-SECRET-KEY-1QYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQS\"}\n")
	code, out := check(dir)
	if code != 1 || !strings.Contains(out, logFile+":2:") || !strings.Contains(out, auditFile+":2:") {
		t.Errorf("leaks: exit %d\n%s\nwant 1 naming %s:2 and %s:2", code, out, logFile, auditFile)
	}
	if strings.Contains(out, secret) {
		t.Errorf("the check printed the whole secret:\n%s", out)
	}
}
