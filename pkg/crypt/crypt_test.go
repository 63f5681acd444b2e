package crypt_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/crypt"
)

// newKey makes an identity and writes it to a file as age-keygen does.
func newKey(t testing.TB) (*age.X25519Identity, string) {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "key.txt")
	content := fmt.Sprintf("# created: 2025-11-30T14:30:22Z\n# public key: %s\n%s\n", id.Recipient(), id)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return id, path
}

func encrypt(t testing.TB, r *crypt.Recipients, plain []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := r.Encrypt(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(plain); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestRoundTripAndErrorClasses(t *testing.T) {
	a, aFile := newKey(t)
	b, bFile := newKey(t)
	recips, err := crypt.LoadRecipients(a.Recipient().String()+", "+b.Recipient().String()+" "+a.Recipient().String(), "")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := recips.Keys(), []string{a.Recipient().String(), b.Recipient().String()}; !equal(got, want) {
		t.Errorf("keys %q, want %q (repeats dropped, order kept)", got, want)
	}
	plain := bytes.Repeat([]byte("the quick brown fox "), 10000) // several 64 KiB chunks
	ct := encrypt(t, recips, plain)
	if !crypt.IsEncrypted(ct) || crypt.IsEncrypted(plain) {
		t.Errorf("IsEncrypted: ciphertext %v, plaintext %v", crypt.IsEncrypted(ct), crypt.IsEncrypted(plain))
	}
	if bytes.Contains(ct, []byte("quick brown")) {
		t.Error("the ciphertext holds the plaintext")
	}
	idA, err := crypt.LoadIdentities(aFile)
	if err != nil {
		t.Fatal(err)
	}
	idB, err := crypt.LoadIdentities(bFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []*crypt.Identities{idA, idB} {
		r, err := id.Decrypt(bytes.NewReader(ct))
		if err != nil {
			t.Fatalf("%v: decrypt: %v", id, err)
		}
		got, err := io.ReadAll(r)
		if err != nil || !bytes.Equal(got, plain) {
			t.Errorf("%v: read %d bytes (%v), want the %d plaintext bytes", id, len(got), err, len(plain))
		}
	}

	c, cFile := newKey(t)
	idC, err := crypt.LoadIdentities(cFile)
	if err != nil {
		t.Fatal(err)
	}
	readErr := errors.New("object store: digest mismatch")
	flipped := bytes.Clone(ct)
	flipped[len(flipped)/2] ^= 1
	cases := []struct {
		name string
		id   *crypt.Identities
		src  io.Reader
		want error
		msg  []string
	}{
		{"no identity", nil, bytes.NewReader(ct), crypt.ErrNoIdentity, nil},
		{"wrong identity", idC, bytes.NewReader(ct), crypt.ErrCannotDecrypt, []string{"cannot decrypt", cFile, c.Recipient().String()}},
		{"altered chunk", idA, bytes.NewReader(flipped), crypt.ErrDamaged, nil},
		{"truncated", idA, bytes.NewReader(ct[:len(ct)-100]), crypt.ErrDamaged, nil},
		{"cut at a chunk boundary", idA, bytes.NewReader(ct[:len(ct)-(len(plain)%(64<<10)+16)]), crypt.ErrDamaged, nil},
		{"trailing bytes", idA, bytes.NewReader(append(bytes.Clone(ct), 'x')), crypt.ErrDamaged, nil},
		{"not age", idA, bytes.NewReader(plain), crypt.ErrDamaged, nil},
		{"empty", idA, bytes.NewReader(nil), crypt.ErrDamaged, nil},
		{"reader fails in the header", idA, io.MultiReader(bytes.NewReader(ct[:20]), &failing{readErr}), readErr, nil},
		{"reader fails in the payload", idA, io.MultiReader(bytes.NewReader(ct[:len(ct)/2]), &failing{readErr}), readErr, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := tc.id.Decrypt(tc.src)
			if err == nil {
				_, err = io.ReadAll(r)
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
			for _, m := range tc.msg {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q does not say %q", err, m)
				}
			}
			for _, id := range []*age.X25519Identity{a, b, c} {
				if strings.Contains(err.Error(), id.String()) {
					t.Errorf("error %q holds a secret key", err)
				}
			}
		})
	}
}

type failing struct{ err error }

func (f *failing) Read([]byte) (int, error) { return 0, f.err }

func equal(a, b []string) bool { return strings.Join(a, "\n") == strings.Join(b, "\n") }

// TestKeyFiles: bad keys are refused with the line at fault, and a secret
// key is never echoed, however it is misplaced or printed.
func TestKeyFiles(t *testing.T) {
	a, aFile := newKey(t)
	secret := a.String()
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name, content, want string
	}{
		{"public.txt", "# a recipients file\n" + a.Recipient().String() + "\n", "line 2 is a public key"},
		{"garbage.txt", "\n\nnot a key\n", "line 3 is not an age X25519 identity"},
		{"malformed.txt", secret[:len(secret)-3] + "QQQ\n", "line 1 is not a valid age X25519 identity"},
		{"empty.txt", "# nothing\n", "holds no identity"},
		{"huge.txt", strings.Repeat("#", 2<<20), "larger than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := crypt.LoadIdentities(write(tc.name, tc.content))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one saying %q", err, tc.want)
			}
			if strings.Contains(err.Error(), secret[16:]) {
				t.Errorf("error %q holds the secret key", err)
			}
		})
	}
	if _, err := crypt.LoadIdentities(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing identity file: %v", err)
	}
	if id, err := crypt.LoadIdentities(""); id != nil || err != nil {
		t.Errorf("no identity file: %v, %v; want nil, nil", id, err)
	}

	t.Run("secret key as a recipient", func(t *testing.T) {
		_, err := crypt.LoadRecipients(secret, "")
		if err == nil || strings.Contains(err.Error(), secret[16:]) || !strings.Contains(err.Error(), "secret key") {
			t.Errorf("error %v", err)
		}
		_, err = crypt.LoadRecipients("", aFile)
		if err == nil || strings.Contains(err.Error(), secret[16:]) || !strings.Contains(err.Error(), "secret key") {
			t.Errorf("recipients file holding a secret key: error %v", err)
		}
	})
	t.Run("recipients", func(t *testing.T) {
		if _, err := crypt.LoadRecipients("age1notakey", ""); err == nil || !strings.Contains(err.Error(), `"age1notakey"`) {
			t.Errorf("bad recipient: %v", err)
		}
		f := write("recipients.txt", "# ops\n"+a.Recipient().String()+"\n\n")
		r, err := crypt.LoadRecipients("", f)
		if err != nil || !equal(r.Keys(), []string{a.Recipient().String()}) {
			t.Errorf("recipients file: %v %v", r, err)
		}
		if _, err := crypt.LoadRecipients("", write("none.txt", "# none\n")); err == nil {
			t.Error("an empty recipients file was accepted")
		}
		if r, err := crypt.LoadRecipients(" , ", ""); r != nil || err != nil {
			t.Errorf("no recipients: %v, %v; want nil, nil", r, err)
		}
	})
	t.Run("printing and logging", func(t *testing.T) {
		id, err := crypt.LoadIdentities(aFile)
		if err != nil {
			t.Fatal(err)
		}
		var logged bytes.Buffer
		slog.New(slog.NewJSONHandler(&logged, nil)).Info("loaded", "identity", id)
		slog.New(slog.NewTextHandler(&logged, nil)).Info("loaded", "identity", id)
		out := fmt.Sprintf("%v %+v %#v %s ", id, id, id, id) + logged.String()
		if strings.Contains(out, secret[16:]) {
			t.Errorf("printed identity holds the secret key: %s", out)
		}
		if !strings.Contains(out, a.Recipient().String()) || !strings.Contains(out, aFile) {
			t.Errorf("printed identity does not name its file and public key: %s", out)
		}
	})
}

// TestCanDecrypt: identities decrypt an archive when one of their public
// keys is among its recipients.
func TestCanDecrypt(t *testing.T) {
	for _, tc := range []struct {
		recipients, pubs []string
		want             bool
	}{
		{[]string{"age1a", "age1b"}, []string{"age1b"}, true},
		{[]string{"age1a"}, []string{"age1c", "age1a"}, true},
		{[]string{"age1a"}, []string{"age1b"}, false},
		{[]string{"age1a"}, nil, false},
		{nil, []string{"age1a"}, false},
	} {
		if got := crypt.CanDecrypt(tc.recipients, tc.pubs); got != tc.want {
			t.Errorf("CanDecrypt(%q, %q) = %v, want %v", tc.recipients, tc.pubs, got, tc.want)
		}
	}
}
