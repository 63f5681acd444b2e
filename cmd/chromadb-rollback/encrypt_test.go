package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/crypt"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
	"github.com/chromadb-rollback/chromadb-rollback/services/snapshotter"
)

// TestCLIEncryptedSnapshot: against a snapshotter with age recipients and
// no identity, info shows the encryption, verify passes on the ciphertext
// and warns that the content was not checked, export writes the encrypted
// bytes as stored, and importing that file is refused (exit 3) naming the
// missing identity. serve refuses bad key settings before starting
// anything, without echoing a secret key.
func TestCLIEncryptedSnapshot(t *testing.T) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	pub, secret := id.Recipient().String(), id.String()
	dir := t.TempDir()

	t.Run("serve refuses bad keys", func(t *testing.T) {
		c := cli{t: t, url: "nats://127.0.0.1:1"}
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"--age-identity-file", filepath.Join(dir, "missing.txt")}, "--age-identity-file"},
			{[]string{"--age-recipients", secret}, "secret key"},
			{[]string{"--age-recipients", "age1nope"}, `"age1nope"`},
		} {
			args := append([]string{"serve", "--chroma-url", "http://127.0.0.1:1", "--data-dir", filepath.Join(dir, "data"), "--metrics-listen", "off"}, tc.args...)
			code, _, stderr := c.run(args...)
			if code != exitUsage || !strings.Contains(stderr, tc.want) || strings.Contains(stderr, secret) {
				t.Errorf("serve %q: exit %d, stderr %q; want %d saying %q", tc.args, code, stderr, exitUsage, tc.want)
			}
		}
		if _, err := os.Stat(filepath.Join(dir, "data")); !os.IsNotExist(err) {
			t.Errorf("serve created its data dir before refusing: %v", err)
		}
	})

	ch := testenv.StartChroma(t)
	cc := ch.Client(t)
	if err := testenv.SeedWorkload(t.Context(), cc, "default_tenant", "default_database", 1, 100, 8, 100); err != nil {
		t.Fatal(err)
	}
	n := testenv.StartNATS(t)
	recipients, err := crypt.ParseRecipients(pub)
	if err != nil {
		t.Fatal(err)
	}
	c := startSnapshotter(t, n, snapshotter.Config{ChromaURL: ch.URL, Recipients: recipients}, cc)

	m := c.createSnapshot("sealed")
	if m.Encryption != contract.EncryptionAge {
		t.Fatalf("create --json: encryption %q, want %q", m.Encryption, contract.EncryptionAge)
	}

	code, stdout, _ := c.run("snapshot", "info", "sealed")
	if code != exitOK || !strings.Contains(stdout, "encryption:") || !strings.Contains(stdout, "age to "+pub) {
		t.Errorf("info: exit %d: %s", code, stdout)
	}

	code, stdout, stderr := c.run("snapshot", "verify", "sealed")
	if code != exitOK || !strings.Contains(stdout, "OK (ciphertext only)") || !strings.Contains(stdout, m.SHA256) ||
		!strings.Contains(stderr, "content not checked") || !strings.Contains(stderr, "--age-identity-file") {
		t.Errorf("verify: exit %d\nstdout %s\nstderr %s", code, stdout, stderr)
	}

	file := filepath.Join(dir, "sealed.tar.zst.age")
	code, stdout, stderr = c.run("snapshot", "export", "sealed", "-o", file)
	if code != exitOK || !strings.Contains(stdout, "encrypted with age to "+pub) {
		t.Fatalf("export: exit %d\nstdout %s\nstderr %s", code, stdout, stderr)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(data); !crypt.IsEncrypted(data) || hex.EncodeToString(sum[:]) != m.SHA256 {
		t.Errorf("exported file: age file %v, sha256 %x, manifest %s", crypt.IsEncrypted(data), sum, m.SHA256)
	}

	code, _, stderr = c.run("snapshot", "import", file, "--name", "sealed_copy")
	if code != exitVerification || !strings.Contains(stderr, "encrypted with age") || !strings.Contains(stderr, "no identity") {
		t.Errorf("import without identity: exit %d, stderr %s", code, stderr)
	}
	// Not refused by the CLI's own format check: the snapshotter saw it.
	if bytes.Contains([]byte(stderr), []byte("neither gzip")) {
		t.Errorf("the CLI refused the encrypted file itself: %s", stderr)
	}
	code, stdout, _ = c.run("snapshot", "list")
	if code != exitOK || strings.Contains(stdout, "sealed_copy") {
		t.Errorf("list after a refused import: exit %d: %s", code, stdout)
	}
}
