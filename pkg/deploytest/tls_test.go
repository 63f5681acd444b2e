package deploytest

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
	"github.com/nats-io/nats-server/v2/server"
)

// makeTestCA runs deploy/tls/make-test-ca.sh into a temp dir and points
// the server's TLS variables (read by deploy/nats/tls*.conf) at its files.
func makeTestCA(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "certs")
	script := filepath.Join(testenv.DeployDir(t), "tls", "make-test-ca.sh")
	for run := range 2 {
		out, err := exec.Command("bash", script, dir, "operator").CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", script, err, out)
		}
		if run == 1 && strings.Contains(string(out), "made") {
			t.Fatalf("a second run of %s made files again (it must be idempotent):\n%s", script, out)
		}
	}
	t.Setenv("NATS_SERVER_CERT", filepath.Join(dir, "server.pem"))
	t.Setenv("NATS_SERVER_KEY", filepath.Join(dir, "server-key.pem"))
	t.Setenv("NATS_SERVER_CA", filepath.Join(dir, "ca.pem"))
	return dir
}

// With tls.conf included, a plaintext client and a client without a
// certificate are refused; a client with the CA, a certificate and its
// password connects and works.
func TestDeployTLS(t *testing.T) {
	certs := makeTestCA(t)
	pw := testenv.SetDeployPasswords(t)
	s := testenv.StartDeployServer(t, "single.conf", "tls.conf")
	url := s.ClientURL()
	op := pw.Config("operator")

	// Plaintext: the server announces that TLS is required and never
	// answers a CONNECT sent in the clear.
	plaintextRefused(t, s.Addr().String(), "operator", pw["operator"])
	if _, err := op.Connect(url); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("a client without the CA: %v, want the server's certificate refused", err)
	}
	withCA := op
	withCA.CA = filepath.Join(certs, "ca.pem")
	// TLS 1.3 refuses the missing certificate after the handshake: the
	// client sees the server's alert or just the connection closed, before
	// its password is looked at. (With the certificate it connects, below.)
	if _, err := withCA.Connect(url); err == nil || strings.Contains(err.Error(), "Authorization") {
		t.Errorf("a TLS client without a certificate: %v, want the TLS handshake refused", err)
	}
	full := withCA
	full.Cert, full.Key = filepath.Join(certs, "operator.pem"), filepath.Join(certs, "operator-key.pem")
	c := connectWith(t, url, "operator", full)
	if !c.nc.TLSRequired() {
		t.Error("the server does not say TLS is required")
	}
	if _, err := c.nc.TLSConnectionState(); err != nil {
		t.Errorf("the connection is not TLS: %v", err)
	}
	if _, err := c.js.AccountInfo(t.Context()); err != nil {
		t.Errorf("JetStream over TLS: %v", err)
	}
	c.noViolations(t)
	bad := full
	bad.Password = "wrong"
	if _, err := bad.Connect(url); err == nil || !strings.Contains(err.Error(), "Authorization Violation") {
		t.Errorf("a TLS client with a wrong password: %v, want an authorization violation", err)
	}

	// The routes' TLS include parses inside a cluster block and turns on
	// verified TLS there.
	o := testenv.LoadDeployConfig(t, "cluster/node-1.conf")
	if o.Cluster.TLSConfig != nil {
		t.Fatal("node-1.conf has route TLS on by default")
	}
	wrapper := filepath.Join(t.TempDir(), "routes.conf")
	rel, err := filepath.Rel(filepath.Dir(wrapper), filepath.Join(testenv.DeployDir(t), "nats", "tls-routes.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(wrapper, []byte("cluster {\n  name: chroma\n  listen: 127.0.0.1:-1\n  include \""+rel+"\"\n}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ro, err := server.ProcessConfigFile(wrapper)
	if err != nil {
		t.Fatalf("tls-routes.conf in a cluster block: %v", err)
	}
	if tc := ro.Cluster.TLSConfig; tc == nil || tc.ClientAuth != tls.RequireAndVerifyClientCert {
		t.Errorf("tls-routes.conf: route TLS %+v; want TLS that verifies the other node's certificate", tc)
	}
}

// plaintextRefused speaks the NATS protocol in the clear to addr: the
// server's INFO must require TLS and a plaintext CONNECT must get no PONG.
func plaintextRefused(t *testing.T, addr, user, password string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(3 * time.Second))
	r := bufio.NewReader(conn)
	info, err := r.ReadString('\n')
	if err != nil || !strings.HasPrefix(info, "INFO ") {
		t.Fatalf("server greeting %q: %v", info, err)
	}
	var i struct {
		TLSRequired bool `json:"tls_required"`
	}
	if err := json.Unmarshal([]byte(strings.TrimPrefix(strings.TrimSpace(info), "INFO ")), &i); err != nil || !i.TLSRequired {
		t.Errorf("server INFO %s: tls_required %v (%v), want true", info, i.TLSRequired, err)
	}
	connect, _ := json.Marshal(map[string]any{"user": user, "pass": password, "verbose": false, "pedantic": false, "protocol": 1})
	if _, err := fmt.Fprintf(conn, "CONNECT %s\r\nPING\r\n", connect); err != nil {
		return // the server already closed it
	}
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return // closed without a PONG: refused
		}
		if strings.HasPrefix(line, "PONG") {
			t.Fatal("the server answered a plaintext client")
		}
	}
}
