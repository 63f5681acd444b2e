package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// secretText gathers everything a test's programs printed, logged or
// stored, to be searched for secrets.
type secretText struct {
	parts []string
	names []string
}

func (s *secretText) add(name, text string) {
	s.names = append(s.names, name)
	s.parts = append(s.parts, text)
}

// leaks names, for each secret found, where it was found: any of secrets,
// any string with testenv.SecretMarker, and any age secret key.
func (s *secretText) leaks(secrets ...string) []string {
	ageKey := regexp.MustCompile(`AGE-SECRET-KEY-1[0-9A-Z]{20,}`)
	var out []string
	for i, text := range s.parts {
		for _, sec := range secrets {
			if strings.Contains(text, sec) {
				out = append(out, fmt.Sprintf("%s holds the secret %.14s...", s.names[i], sec))
			}
		}
		for _, line := range strings.Split(text, "\n") {
			if strings.Contains(line, testenv.SecretMarker) || ageKey.MatchString(line) {
				out = append(out, fmt.Sprintf("%s: %.300s", s.names[i], line))
			}
		}
	}
	return out
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// `serve` with every secret configured (a Chroma token that a proxy in
// front of Chroma demands, credentials in the Chroma URL, an age identity)
// goes through success and failure paths: snapshots, a full verify and a
// rollback of an encrypted archive, the gate, metrics and health; a
// snapshot whose job Chroma refuses (401) halfway, a revoked token (every
// request 401), rollbacks to Chroma URLs holding credentials. No log line,
// CLI output, audit event, trail line, manifest or metrics page holds a
// secret, while the URL is shown redacted.
func TestNoSecretsInServeLogsOrAudit(t *testing.T) {
	token := testenv.Secret("chroma")
	urlPassword := testenv.Secret("urlpassword")
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	idFile := filepath.Join(t.TempDir(), "rollback-key.txt")
	if err := os.WriteFile(idFile, []byte("# test key\n"+id.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	ch := testenv.StartChroma(t)
	if err := testenv.SeedWorkload(t.Context(), ch.Client(t), "default_tenant", "default_database", 2, 120, 8, 40); err != nil {
		t.Fatal(err)
	}
	proxy := testenv.StartChromaAuthProxy(t, ch.URL, token)
	chromaURL := "http://ops:" + urlPassword + "@" + strings.TrimPrefix(proxy.URL, "http://")
	t.Setenv("CHROMA_TOKEN", token)
	t.Setenv("LOG_LEVEL", "debug")
	t.Setenv("NATS_URL", "")

	// serve, as an operator runs it; its log is what it writes to stderr.
	natsAddr, gateAddr := freeAddr(t), freeAddr(t)
	dataDir := t.TempDir()
	var serveLog testenv.SyncBuffer
	log := testenv.Logger(t) // the artifact copy of serve's log
	serveOut := io.MultiWriter(&serveLog, logWriter{log})
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan int, 1)
	go func() {
		served <- run(ctx, []string{"serve", "--chroma-url", chromaURL, "--data-dir", dataDir, "--listen", natsAddr,
			"--gate-listen", gateAddr, "--metrics-listen", "127.0.0.1:0", "--age-recipients", id.Recipient().String(),
			"--age-identity-file", idFile}, strings.NewReader(""), io.Discard, serveOut)
	}()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			if code := <-served; code != exitOK {
				t.Errorf("serve exited %d:\n%s", code, serveLog.String())
			}
		}
	}
	t.Cleanup(stop)

	var seen secretText
	c := cli{t: t, url: "nats://" + natsAddr}
	cliRun := func(args ...string) (int, string, string) {
		t.Helper()
		code, stdout, stderr := c.run(args...)
		seen.add("`chromadb-rollback "+strings.Join(args, " ")+"`", stdout+stderr)
		return code, stdout, stderr
	}
	for deadline := time.Now().Add(time.Minute); ; {
		code, stdout, stderr := c.run("health-check")
		if code == exitOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("health-check: exit %d\n%s%s\nserve:\n%s", code, stdout, stderr, serveLog.String())
		}
		time.Sleep(200 * time.Millisecond)
	}

	// Success paths.
	if code, stdout, stderr := cliRun("snapshot", "create", "--name", "pre", "--json"); code != exitOK || !strings.Contains(stdout, `"encryption": "age"`) {
		t.Fatalf("snapshot create: exit %d\n%s%s", code, stdout, stderr)
	}
	if code, stdout, stderr := cliRun("snapshot", "verify", "pre"); code != exitOK || strings.Contains(stdout, "ciphertext only") {
		t.Errorf("snapshot verify with the identity: exit %d\n%s%s", code, stdout, stderr)
	}
	if code, stdout, stderr := cliRun("snapshot", "info", "pre", "--json"); code != exitOK || !strings.Contains(stdout, "ops:xxxxx@") {
		t.Errorf("snapshot info: exit %d, want the Chroma URL redacted\n%s%s", code, stdout, stderr)
	}
	if code, stdout, stderr := cliRun("rollback", "pre", "--yes", "--reason", "secrets test"); code != exitOK {
		t.Errorf("rollback of the encrypted snapshot: exit %d\n%s%s", code, stdout, stderr)
	}
	for _, args := range [][]string{{"status", "--json"}, {"snapshot", "list", "--json"}} {
		if code, stdout, stderr := cliRun(args...); code != exitOK {
			t.Errorf("%v: exit %d\n%s%s", args, code, stdout, stderr)
		}
	}
	gateGet := func(tok string) int {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+gateAddr+"/api/v2/heartbeat", nil)
		if tok != "" {
			req.Header.Set("X-Chroma-Token", tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := gateGet(token); got != http.StatusOK {
		t.Errorf("GET through the gate with the token: %d, want 200", got)
	}
	if got := gateGet(""); got != http.StatusUnauthorized {
		t.Errorf("GET through the gate without the token: %d, want 401", got)
	}
	metricsAddr := regexp.MustCompile(`metrics: http://([0-9.:]+)/metrics`).FindStringSubmatch(serveLog.String())
	if metricsAddr == nil {
		t.Fatalf("serve did not print its metrics address:\n%s", serveLog.String())
	}
	for _, path := range []string{"/metrics", "/healthz"} {
		resp, err := http.Get("http://" + metricsAddr[1] + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		seen.add("GET "+path, string(body))
		if path == "/healthz" && (resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "ops:xxxxx@")) {
			t.Errorf("GET /healthz: %s, want 200 naming the redacted Chroma URL\n%s", resp.Status, body)
		}
	}

	// Failure paths: Chroma refuses the snapshot job's reads halfway.
	proxy.Deny(func(r *http.Request) bool {
		return r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/get")
	})
	if code, stdout, stderr := cliRun("snapshot", "create", "--name", "doomed"); code == exitOK {
		t.Errorf("snapshot create with its reads refused: exit 0\n%s%s", stdout, stderr)
	}
	proxy.Deny(nil)
	// The token is revoked: every request is refused.
	proxy.SetToken(testenv.Secret("rotated"))
	if code, stdout, stderr := cliRun("health-check"); code == exitOK || !strings.Contains(stdout+stderr, "Unauthorized") {
		t.Errorf("health-check with a revoked token: exit %d, want a failure naming Unauthorized\n%s%s", code, stdout, stderr)
	}
	if code, stdout, stderr := cliRun("snapshot", "create", "--name", "refused"); code == exitOK || !strings.Contains(stdout+stderr, "Unauthorized") {
		t.Errorf("snapshot create with a revoked token: exit %d, want a refusal naming Unauthorized\n%s%s", code, stdout, stderr)
	}
	proxy.SetToken(token)
	// Rollbacks into Chroma servers given with credentials in the URL.
	otherSecret := testenv.Secret("other")
	for _, u := range []string{"http://ops:" + otherSecret + "@127.0.0.1:1", "http://ops:" + otherSecret + "\x7f@127.0.0.1:1"} {
		if code, stdout, stderr := cliRun("rollback", "pre", "--dry-run", "--chroma-url", u); code == exitOK {
			t.Errorf("rollback --chroma-url to a server not allowed: exit 0\n%s%s", stdout, stderr)
		}
	}
	if proxy.Refused() == 0 {
		t.Error("the proxy refused nothing: the failure paths were not taken")
	}

	// What the services stored: audit events, manifests, the trail.
	nc, err := nats.Connect("nats://" + natsAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	var audit strings.Builder
	failed, rejected := false, false
	for _, m := range testenv.ReadAudit(t, js) {
		fmt.Fprintf(&audit, "%s\n", m.Data)
		if m.Event.Action == "snapshot.create" && m.Event.Outcome == contract.OutcomeFailed && strings.Contains(m.Event.Error, "Unauthorized") {
			failed = true
		}
		if m.Event.Action == "snapshot.create" && m.Event.Outcome == contract.OutcomeRejected && strings.Contains(m.Event.Error, "Unauthorized") {
			rejected = true
		}
	}
	if !failed || !rejected {
		t.Errorf("audit: a failed snapshot %v, a rejected one %v, both naming Unauthorized; want both:\n%s", failed, rejected, audit.String())
	}
	seen.add("the audit stream", audit.String())
	manifests, err := js.KeyValue(t.Context(), contract.BucketManifests)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := manifests.Keys(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		e, err := manifests.Get(t.Context(), k)
		if err != nil {
			t.Fatal(err)
		}
		seen.add("manifest "+k, string(e.Value()))
	}
	nc.Close()
	stop()
	trail, err := os.ReadFile(filepath.Join(dataDir, contract.AuditTrailFile))
	if err != nil {
		t.Fatal(err)
	}
	// Kept for the check of the test artifacts as well.
	if err := os.WriteFile(filepath.Join(testenv.ArtifactDir(t, "trails"), contract.AuditTrailFile), trail, 0o644); err != nil {
		t.Fatal(err)
	}
	seen.add("the audit trail", string(trail))
	seen.add("serve's log", serveLog.String())

	if !strings.Contains(serveLog.String(), "chroma_url=http://ops:xxxxx@") {
		t.Errorf("serve's log does not show the Chroma URL redacted:\n%s", serveLog.String())
	}
	if leaks := seen.leaks(token, urlPassword, otherSecret, id.String()); len(leaks) > 0 {
		t.Errorf("secrets leaked:\n%s", strings.Join(leaks, "\n"))
	}
}

// logWriter copies what serve writes into a test logger, line by line.
type logWriter struct {
	log interface{ Info(string, ...any) }
}

func (w logWriter) Write(p []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		w.log.Info("serve", "line", line)
	}
	return len(p), nil
}

// The CLI's NATS credentials stay out of what it prints: a wrong password
// (flag or URL) against the real deploy config fails naming the URL
// redacted, and --help does not show credentials from NATS_URL or
// CHROMA_URL as defaults.
func TestNoNATSPasswordInCLIOutput(t *testing.T) {
	pw := testenv.SetDeployPasswords(t)
	srv := testenv.StartDeployServer(t, "single.conf")
	hostport := strings.TrimPrefix(srv.ClientURL(), "nats://")
	wrong := testenv.Secret("wrong")
	var seen secretText
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"wrong password", []string{"--nats-url", srv.ClientURL(), "--nats-user", "operator", "--nats-password", wrong, "snapshot", "list"}},
		{"wrong password in the URL", []string{"--nats-url", "nats://operator:" + wrong + "@" + hostport, "snapshot", "list"}},
		{"dashboard password for the operator", []string{"--nats-url", "nats://operator:" + pw["dashboard"] + "@" + hostport, "status"}},
	} {
		var out, errb testenv.SyncBuffer
		code := run(t.Context(), tc.args, strings.NewReader(""), &out, &errb)
		seen.add(tc.name, out.String()+errb.String())
		if code != exitFailed || !strings.Contains(errb.String(), "Authorization Violation") {
			t.Errorf("%s: exit %d, stderr %q; want %d naming the authorization violation", tc.name, code, errb.String(), exitFailed)
		}
		if strings.Contains(tc.args[1], "@") && !strings.Contains(errb.String(), "operator:xxxxx@") {
			t.Errorf("%s: stderr %q does not name the URL redacted", tc.name, errb.String())
		}
	}
	// The right password in NATS_PASSWORD connects (no service answers here).
	t.Setenv("NATS_PASSWORD", pw["operator"])
	var out, errb testenv.SyncBuffer
	code := run(t.Context(), []string{"--nats-url", srv.ClientURL(), "--nats-user", "operator", "snapshot", "list"}, strings.NewReader(""), &out, &errb)
	seen.add("right password", out.String()+errb.String())
	if code != exitFailed || !strings.Contains(errb.String(), "no service answers") {
		t.Errorf("with the right password: exit %d, stderr %q; want a connection that finds no service", code, errb.String())
	}
	// Defaults from the environment, shown by --help.
	chromaSecret := testenv.Secret("chromaurl")
	t.Setenv("NATS_URL", "nats://operator:"+pw["operator"]+"@"+hostport)
	t.Setenv("CHROMA_URL", "http://ops:"+chromaSecret+"@127.0.0.1:8000")
	for _, args := range [][]string{{"--help"}, {"serve", "--help"}} {
		var out, errb testenv.SyncBuffer
		if code := run(t.Context(), args, strings.NewReader(""), &out, &errb); code != exitOK {
			t.Errorf("%v: exit %d: %s", args, code, errb.String())
		}
		seen.add(strings.Join(args, " "), out.String()+errb.String())
		if !strings.Contains(out.String(), "operator:xxxxx@") {
			t.Errorf("%v does not show NATS_URL's default redacted:\n%s", args, out.String())
		}
	}
	if leaks := seen.leaks(append([]string{wrong, chromaSecret}, passwordList(pw)...)...); len(leaks) > 0 {
		t.Errorf("secrets in the CLI's output:\n%s", strings.Join(leaks, "\n"))
	}
}

func passwordList(pw testenv.DeployPasswords) []string {
	var out []string
	for _, p := range pw {
		out = append(out, p)
	}
	return out
}
