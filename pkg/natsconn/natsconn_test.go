package natsconn_test

import (
	"bytes"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/natsconn"
)

const secret = "s3cretPassw0rd"

// The flags default from the environment, and neither --help nor the
// flag's default shows the password, which is read from NATS_PASSWORD
// when the connection is made.
func TestRegisterFlags(t *testing.T) {
	dir := t.TempDir()
	ca := writeFile(t, dir, "ca.pem")
	t.Setenv(natsconn.EnvUser, "operator")
	t.Setenv(natsconn.EnvPassword, secret)
	t.Setenv(natsconn.EnvCA, ca)
	t.Setenv(natsconn.EnvInboxPrefix, "_INBOX_ops")

	var c natsconn.Config
	fs := flag.NewFlagSet("svc", flag.ContinueOnError)
	var help bytes.Buffer
	fs.SetOutput(&help)
	c.RegisterFlags(fs)
	if err := fs.Parse([]string{"-h"}); err != flag.ErrHelp {
		t.Fatalf("parse -h: %v", err)
	}
	for _, name := range []string{"nats-user", "nats-password", "nats-creds", "nats-nkey", "nats-ca", "nats-cert", "nats-key", "nats-inbox-prefix"} {
		if !strings.Contains(help.String(), "-"+name) {
			t.Errorf("help lacks -%s:\n%s", name, help.String())
		}
	}
	if strings.Contains(help.String(), secret) {
		t.Errorf("help shows the password:\n%s", help.String())
	}
	if c.User != "operator" || c.CA != ca || c.InboxPrefix != "_INBOX_ops" || c.Password != "" {
		t.Errorf("from env: %+v, want user, CA and inbox prefix from the environment and no password in the config", c)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("validate with the password in the environment: %v", err)
	}
	if _, err := c.Options(); err != nil {
		t.Errorf("options: %v", err)
	}

	fs = flag.NewFlagSet("svc", flag.ContinueOnError)
	c = natsconn.Config{}
	c.RegisterFlags(fs)
	if err := fs.Parse([]string{"--nats-user", "restorer", "--nats-inbox-prefix", "_INBOX_r"}); err != nil {
		t.Fatal(err)
	}
	if c.User != "restorer" || c.InboxPrefix != "_INBOX_r" {
		t.Errorf("flags do not override the environment: %+v", c)
	}
}

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	file := writeFile(t, dir, "f.pem")
	missing := filepath.Join(dir, "missing.pem")
	t.Setenv(natsconn.EnvPassword, "")
	for _, tc := range []struct {
		name string
		c    natsconn.Config
		want string // "" for valid
	}{
		{"anonymous", natsconn.Config{}, ""},
		{"user and password", natsconn.Config{User: "u", Password: "p"}, ""},
		{"user without password", natsconn.Config{User: "u"}, "NATS_PASSWORD"},
		{"password without user", natsconn.Config{Password: "p"}, "--nats-user"},
		{"two methods", natsconn.Config{User: "u", Password: "p", Creds: file}, "alternatives"},
		{"creds", natsconn.Config{Creds: file}, ""},
		{"missing creds", natsconn.Config{Creds: missing}, "--nats-creds"},
		{"missing CA", natsconn.Config{CA: missing}, "--nats-ca"},
		{"cert without key", natsconn.Config{CA: file, Cert: file}, "--nats-cert and --nats-key"},
		{"missing key", natsconn.Config{Cert: file, Key: missing}, "--nats-key"},
		{"TLS", natsconn.Config{CA: file, Cert: file, Key: file}, ""},
		{"wildcard inbox", natsconn.Config{InboxPrefix: "_INBOX.*"}, "--nats-inbox-prefix"},
		{"trailing dot inbox", natsconn.Config{InboxPrefix: "_INBOX_x."}, "--nats-inbox-prefix"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("Validate() = %v, want an error naming %q", err, tc.want)
			}
		})
	}
}

func TestRedact(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"nats://ops:" + secret + "@h:4222", "nats://ops:xxxxx@h:4222"},
		{"nats://" + secret + "@h:4222", "nats://xxxxx@h:4222"},
		{"nats://a:4222, nats://u:" + secret + "@b:4222", "nats://a:4222,nats://u:xxxxx@b:4222"},
		{"nats://u:" + secret + "@[bad", "<unparsable URL, redacted>"},
	} {
		if got := natsconn.Redact(tc.in); got != tc.want {
			t.Errorf("Redact(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// Neither a failed connection's error nor a logged Config shows a secret.
func TestNoSecretsPrinted(t *testing.T) {
	c := natsconn.Config{User: "ops", Password: secret, InboxPrefix: "_INBOX_ops"}
	_, err := c.Connect("nats://ops:" + secret + "@127.0.0.1:1")
	if err == nil {
		t.Fatal("connected to port 1")
	}
	if strings.Contains(err.Error(), secret) || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Errorf("connect error %q: want the redacted URL", err)
	}
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("nats", "conn", c)
	for _, s := range []string{buf.String(), c.String(), fmt.Sprintf("%v %+v", c, c)} {
		if strings.Contains(s, secret) {
			t.Errorf("printed config shows the password: %s", s)
		}
	}
	if !strings.Contains(buf.String(), "user ops") {
		t.Errorf("logged config %q: want the user", buf.String())
	}
}

func writeFile(t *testing.T, dir, name string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
