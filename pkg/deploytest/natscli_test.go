package deploytest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
	"github.com/nats-io/nats.go/micro"
)

// natsCLI runs the pinned nats CLI (.tools/bin/nats, from `make tools`) as
// user against url, each request given timeout, and returns its output
// and exit error. `stream view` pages only on a terminal: it runs under
// script(1), which gives it one.
func natsCLI(t *testing.T, url string, pw testenv.DeployPasswords, user string, timeout time.Duration, args ...string) (string, error) {
	t.Helper()
	bin := testenv.NatsCLI(t)
	argv := append([]string{bin, "--server", url, "--user", user, "--password", pw[user], "--timeout", timeout.String()}, args...)
	if p := testenv.DeployInboxPrefix[user]; p != "" {
		argv = append(argv, "--inbox-prefix", p)
	}
	if len(args) > 1 && args[0] == "stream" && args[1] == "view" {
		quoted := make([]string, len(argv))
		for i, a := range argv {
			quoted[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		argv = []string{"script", "-qec", strings.Join(quoted, " "), "/dev/null"}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	home := t.TempDir()
	cmd.Env = append(os.Environ(), "HOME="+home, "XDG_CONFIG_HOME="+home, "NATS_CONTEXT=")
	cmd.Stdin = strings.NewReader("")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// The operator's runbook (README "NATS API") works with the nats CLI under
// the operator's permissions, and a dashboard can view the audit stream
// with it; neither can remove or purge the audit stream.
func TestDeployNatsCLIRunbook(t *testing.T) {
	url, pw := startSingle(t)
	ctx := t.Context()
	snap := connect(t, url, pw, "snapshotter")
	assets := bootstrap(t, snap)
	if _, err := assets.Snapshots.PutBytes(ctx, "snap_1.tar.zst", []byte("an archive")); err != nil {
		t.Fatal(err)
	}
	if _, err := assets.State.Put(ctx, contract.OperationKey("op_1"), []byte(`{"status":"completed"}`)); err != nil {
		t.Fatal(err)
	}
	ids := auditEvents(t, snap, 2)
	svc, err := micro.AddService(snap.nc, micro.Config{Name: "chromadb-snapshotter", Version: "1.0.0"})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Stop()
	if err := svc.AddEndpoint("list", micro.HandlerFunc(func(r micro.Request) { _ = r.Respond([]byte(`{"snapshots":[]}`)) }),
		micro.WithEndpointSubject(subj.API("snapshot", "list"))); err != nil {
		t.Fatal(err)
	}
	export := filepath.Join(t.TempDir(), "snap_1.tar.zst")

	ok := func(user, want string, args ...string) {
		t.Helper()
		if out, err := natsCLI(t, url, pw, user, 5*time.Second, args...); err != nil || !strings.Contains(out, want) {
			t.Errorf("%s: nats %s: %v, output lacks %q:\n%s", user, strings.Join(args, " "), err, want, out)
		}
	}
	refused := func(user string, args ...string) {
		t.Helper()
		if out, err := natsCLI(t, url, pw, user, 500*time.Millisecond, args...); err == nil {
			t.Errorf("%s: nats %s succeeded, want a refusal:\n%s", user, strings.Join(args, " "), out)
		}
	}
	ok("operator", "chromadb-snapshotter", "micro", "ls")
	ok("operator", `"snapshots"`, "req", subj.API("snapshot", "list"), "{}")
	ok("operator", `"completed"`, "kv", "get", contract.BucketState, contract.OperationKey("op_1"), "--raw")
	ok("operator", ids[1], "stream", "view", contract.StreamAudit)
	ok("operator", "snap_1.tar.zst", "obj", "ls", contract.ObjectSnapshots)
	ok("operator", "", "obj", "get", contract.ObjectSnapshots, "snap_1.tar.zst", "--output", export, "--force")
	refused("operator", "stream", "rm", contract.StreamAudit, "--force")
	refused("operator", "stream", "purge", contract.StreamAudit, "--force")
	ok("dashboard", "Messages: 2", "stream", "info", contract.StreamAudit)
	ok("dashboard", ids[0], "stream", "view", contract.StreamAudit)
	ok("dashboard", ids[1], "sub", subj.AuditAll(), "--stream", contract.StreamAudit, "--all", "--count", "2", "--raw")
	refused("dashboard", "stream", "rm", contract.StreamAudit, "--force")
	refused("dashboard", "stream", "purge", contract.StreamAudit, "--force")
	refused("dashboard", "obj", "ls", contract.ObjectSnapshots)
	// nats pub does not wait for an answer: the stream's count below shows the refusal.
	_, _ = natsCLI(t, url, pw, "dashboard", 500*time.Millisecond, "pub", subj.Audit("snapshotter", "snapshot.delete"), "{}")
	if data, err := os.ReadFile(export); err != nil || string(data) != "an archive" {
		t.Errorf("nats obj get as the operator wrote %q, %v", data, err)
	}
	if n := streamMsgs(t, snap, contract.StreamAudit); n != uint64(len(ids)) {
		t.Errorf("the audit stream holds %d events after the refused commands, want %d", n, len(ids))
	}
}
