package snapshotter_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/archive"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/crypt"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
	"github.com/chromadb-rollback/chromadb-rollback/services/snapshotter"
)

// ageKey is a generated age key pair, its secret in a file as age-keygen
// writes it.
type ageKey struct {
	id     *age.X25519Identity
	pub    string
	file   string
	loaded *crypt.Identities
}

func newAgeKey(t *testing.T) ageKey {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	k := ageKey{id: id, pub: id.Recipient().String(), file: filepath.Join(t.TempDir(), "key.txt")}
	if err := os.WriteFile(k.file, fmt.Appendf(nil, "# public key: %s\n%s\n", k.pub, id), 0o600); err != nil {
		t.Fatal(err)
	}
	if k.loaded, err = crypt.LoadIdentities(k.file); err != nil {
		t.Fatal(err)
	}
	return k
}

func (k ageKey) recipients(t *testing.T) *crypt.Recipients {
	t.Helper()
	r, err := crypt.ParseRecipients(k.pub)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestEncryptedArchives: with recipients, the stored object is an age file
// (its digest in the manifest, the recipients named) that only the
// identity opens; verify checks the ciphertext without the identity and
// says so, checks everything with it, and says "cannot decrypt" with a
// wrong one; damage to the ciphertext is caught either way; an encrypted
// export imports only with the identity; without recipients archives stay
// plain.
func TestEncryptedArchives(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	if err := testenv.SeedWorkload(ctx, e.cc, "default_tenant", "default_database", 2, 300, 16, 200); err != nil {
		t.Fatal(err)
	}
	key, wrong := newAgeKey(t), newAgeKey(t)
	// Each phase runs one snapshotter, configured as the phase needs.
	var stop func()
	use := func(t *testing.T, cfg snapshotter.Config) {
		t.Helper()
		if stop != nil {
			stop()
		}
		cfg.MaxPageRecords = 100
		stop = e.startService(t, cfg)
	}

	use(t, snapshotter.Config{Recipients: key.recipients(t)}) // no identity: it writes what it cannot read
	rep := e.create(t, contract.SnapshotCreateRequest{Name: "sealed", Actor: "test"})
	if op := e.waitOp(t, rep.OpID, time.Minute); op.Status != contract.StatusCompleted {
		t.Fatalf("encrypted snapshot: %s %s", op.Status, op.Error)
	}
	m, _ := e.manifest(t, rep.SnapshotID)
	stored, err := e.nats.Assets.Snapshots.GetBytes(ctx, m.Object)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("stored as an age file", func(t *testing.T) {
		if m.Encryption != contract.EncryptionAge || !slices.Equal(m.Recipients, []string{key.pub}) || m.TotalRecords != 300 {
			t.Errorf("manifest: encryption %q, recipients %q, %d records", m.Encryption, m.Recipients, m.TotalRecords)
		}
		if !crypt.IsEncrypted(stored) || m.Size != int64(len(stored)) || m.SHA256 != sha(stored) {
			t.Errorf("object: age file %v, %d bytes with sha256 %s; manifest %d bytes with %s", crypt.IsEncrypted(stored), len(stored), sha(stored), m.Size, m.SHA256)
		}
		plain, err := key.loaded.Decrypt(bytes.NewReader(stored))
		if err != nil {
			t.Fatal(err)
		}
		ar, err := archive.Verify(plain)
		if err != nil || ar.TotalRecords != m.TotalRecords {
			t.Fatalf("decrypted archive: %v, report %+v", err, ar)
		}
		for i, c := range ar.Collections {
			if c.ContentDigest != m.Collections[i].ContentDigest {
				t.Errorf("collection %q: digest %s, manifest %s", c.Name, c.ContentDigest, m.Collections[i].ContentDigest)
			}
		}
		// The documents are not in the ciphertext.
		for _, c := range m.Collections {
			recs, err := testenv.ReadAll(ctx, e.cc, "default_tenant", "default_database", c.ID, 500)
			if err != nil {
				t.Fatal(err)
			}
			for i, d := range recs.Documents {
				if d != nil && len(*d) >= 16 && bytes.Contains(stored, []byte((*d)[:16])) {
					t.Fatalf("record %q: its document is in the stored object in plaintext", recs.IDs[i])
				}
			}
		}
	})

	t.Run("verify without identity checks the ciphertext only", func(t *testing.T) {
		code, vr := e.verify(t, rep.SnapshotID)
		if code != 0 || !vr.OK || vr.SHA256 != m.SHA256 || vr.Size != m.Size || vr.Encryption != contract.EncryptionAge || vr.TotalRecords != 0 {
			t.Fatalf("verify: code %d, report %+v", code, vr)
		}
		t.Logf("no identity: %s", vr.ContentUnchecked)
		for _, want := range []string{"content not checked", "encrypted with age", key.pub, "no identity", "AGE_IDENTITY_FILE"} {
			if !strings.Contains(vr.ContentUnchecked, want) {
				t.Errorf("content_unchecked %q does not say %q", vr.ContentUnchecked, want)
			}
		}
		// Damage to the ciphertext is still found.
		flipped := bytes.Clone(stored)
		flipped[len(flipped)/2] ^= 0x40
		if _, err := e.nats.Assets.Snapshots.PutBytes(ctx, m.Object, flipped); err != nil {
			t.Fatal(err)
		}
		code, vr = e.verify(t, rep.SnapshotID)
		if code != contract.CodeVerificationFailed || vr.OK || !strings.Contains(vr.Problem, "manifest says "+m.SHA256) {
			t.Errorf("damaged ciphertext: code %d, report %+v", code, vr)
		}
		if _, err := e.nats.Assets.Snapshots.PutBytes(ctx, m.Object, stored); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("verify with the identity checks every record", func(t *testing.T) {
		use(t, snapshotter.Config{Recipients: key.recipients(t), Identities: key.loaded})
		code, vr := e.verify(t, rep.SnapshotID)
		if code != 0 || !vr.OK || vr.ContentUnchecked != "" || vr.TotalRecords != m.TotalRecords || vr.SHA256 != m.SHA256 {
			t.Fatalf("verify: code %d, report %+v", code, vr)
		}
		// A damaged chunk is damage, not a key problem.
		flipped := bytes.Clone(stored)
		flipped[len(flipped)-100] ^= 0x40
		if _, err := e.nats.Assets.Snapshots.PutBytes(ctx, m.Object, flipped); err != nil {
			t.Fatal(err)
		}
		code, vr = e.verify(t, rep.SnapshotID)
		if code != contract.CodeVerificationFailed || !strings.Contains(vr.Problem, "damaged") {
			t.Errorf("damaged chunk: code %d, report %+v", code, vr)
		}
		t.Logf("damaged chunk: %s", vr.Problem)
		if _, err := e.nats.Assets.Snapshots.PutBytes(ctx, m.Object, stored); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("verify with a wrong identity cannot decrypt", func(t *testing.T) {
		use(t, snapshotter.Config{Identities: wrong.loaded})
		code, vr := e.verify(t, rep.SnapshotID)
		if code != contract.CodeVerificationFailed || vr.OK {
			t.Fatalf("verify: code %d, report %+v", code, vr)
		}
		t.Logf("wrong identity: %s", vr.Problem)
		for _, want := range []string{"cannot decrypt", key.pub, wrong.pub} {
			if !strings.Contains(vr.Problem, want) {
				t.Errorf("problem %q does not say %q", vr.Problem, want)
			}
		}
	})

	t.Run("import of the encrypted export", func(t *testing.T) {
		// `snapshot export` writes the stored bytes as they are: stored.
		refused := []struct {
			name string
			cfg  snapshotter.Config
			want []string
		}{
			{"no identity", snapshotter.Config{Recipients: key.recipients(t)}, []string{"encrypted with age", "no identity", "--age-identity-file"}},
			{"wrong identity", snapshotter.Config{Identities: wrong.loaded}, []string{"cannot decrypt", wrong.pub}},
		}
		for _, tc := range refused {
			t.Run(tc.name, func(t *testing.T) {
				use(t, tc.cfg)
				before := len(e.manifests(t))
				code, body := e.importFile(t, contract.SnapshotImportRequest{Object: e.stage(t, stored), FileName: "sealed.tar.zst.age", Actor: "test"})
				if code != contract.CodeVerificationFailed {
					t.Fatalf("import: code %d %s, want %d", code, body, contract.CodeVerificationFailed)
				}
				t.Logf("refused: %s", body)
				for _, w := range tc.want {
					if !strings.Contains(string(body), w) {
						t.Errorf("refusal %s does not say %q", body, w)
					}
				}
				if n := len(e.manifests(t)); n != before {
					t.Errorf("%d manifests after a refused import, %d before", n, before)
				}
			})
		}

		use(t, snapshotter.Config{Recipients: key.recipients(t), Identities: key.loaded})
		code, body := e.importFile(t, contract.SnapshotImportRequest{Object: e.stage(t, stored), FileName: "sealed.tar.zst.age", Name: "sealed_copy", Actor: "test"})
		if code != 0 {
			t.Fatalf("import with the identity: %d %s", code, body)
		}
		var im contract.SnapshotManifest
		if err := json.Unmarshal(body, &im); err != nil {
			t.Fatal(err)
		}
		o := im.ImportedFrom
		if im.Encryption != contract.EncryptionAge || !slices.Equal(im.Recipients, []string{key.pub}) || im.TotalRecords != m.TotalRecords ||
			o == nil || o.Encryption != contract.EncryptionAge || o.SHA256 != m.SHA256 || o.SourceSnapshotID != m.SnapshotID {
			t.Errorf("imported manifest %+v\norigin %+v", im, o)
		}
		for i, c := range im.Collections {
			if c.ContentDigest != m.Collections[i].ContentDigest || c.Count != m.Collections[i].Count {
				t.Errorf("imported collection %q: %d records, digest %s; original %d, %s", c.Name, c.Count, c.ContentDigest, m.Collections[i].Count, m.Collections[i].ContentDigest)
			}
		}
		if code, vr := e.verify(t, im.SnapshotID); code != 0 || !vr.OK || vr.ContentUnchecked != "" || vr.TotalRecords != m.TotalRecords {
			t.Errorf("verify the import: code %d, %+v", code, vr)
		}
	})

	t.Run("plain import encrypted by a snapshotter without identity", func(t *testing.T) {
		// Decrypted by hand (age -d), imported where only recipients are
		// configured: stored encrypted, verified as it was written.
		plain, err := key.loaded.Decrypt(bytes.NewReader(stored))
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(plain)
		if err != nil {
			t.Fatal(err)
		}
		use(t, snapshotter.Config{Recipients: key.recipients(t)})
		code, body := e.importFile(t, contract.SnapshotImportRequest{Object: e.stage(t, data), FileName: "sealed.tar.zst", Name: "resealed", Actor: "test"})
		if code != 0 {
			t.Fatalf("import: %d %s", code, body)
		}
		var im contract.SnapshotManifest
		_ = json.Unmarshal(body, &im)
		obj, err := e.nats.Assets.Snapshots.GetBytes(ctx, im.Object)
		if err != nil {
			t.Fatal(err)
		}
		if im.Encryption != contract.EncryptionAge || !crypt.IsEncrypted(obj) || im.ImportedFrom.Encryption != "" || im.ImportedFrom.SHA256 != sha(data) {
			t.Errorf("imported manifest %+v, object starts %q", im, obj[:min(len(obj), 24)])
		}
		if code, vr := e.verify(t, im.SnapshotID); code != 0 || !vr.OK || vr.ContentUnchecked == "" {
			t.Errorf("verify without identity: code %d, %+v", code, vr)
		}
	})

	t.Run("without recipients archives stay plain", func(t *testing.T) {
		use(t, snapshotter.Config{Identities: key.loaded}) // an identity alone encrypts nothing
		rep := e.create(t, contract.SnapshotCreateRequest{Name: "plain", Actor: "test"})
		if op := e.waitOp(t, rep.OpID, time.Minute); op.Status != contract.StatusCompleted {
			t.Fatalf("snapshot: %s %s", op.Status, op.Error)
		}
		pm, _ := e.manifest(t, rep.SnapshotID)
		obj, err := e.nats.Assets.Snapshots.GetBytes(ctx, pm.Object)
		if err != nil {
			t.Fatal(err)
		}
		if pm.Encryption != "" || pm.Recipients != nil || crypt.IsEncrypted(obj) || !bytes.HasPrefix(obj, []byte{0x28, 0xb5, 0x2f, 0xfd}) {
			t.Errorf("plain snapshot: encryption %q, recipients %q, object starts %x", pm.Encryption, pm.Recipients, obj[:4])
		}
		if code, vr := e.verify(t, rep.SnapshotID); code != 0 || !vr.OK || vr.ContentUnchecked != "" || vr.Encryption != "" || vr.TotalRecords != 300 {
			t.Errorf("verify: code %d, %+v", code, vr)
		}
	})

	// The audit trail says which verifies checked the content.
	var checked []any
	for _, ev := range findAudit(e.auditEvents(t), "snapshot.verify", contract.OutcomeCompleted) {
		if ev.SnapshotID == rep.SnapshotID {
			checked = append(checked, ev.Figures["content_checked"])
		}
	}
	if want := []any{false, true}; !slices.Equal(checked, want) {
		t.Errorf("content_checked of the completed verifies of %s: %v, want %v", rep.SnapshotID, checked, want)
	}
	// No secret key in any audit event.
	for _, ev := range e.auditEvents(t) {
		b, _ := json.Marshal(ev)
		for _, k := range []ageKey{key, wrong} {
			if strings.Contains(string(b), k.id.String()) {
				t.Errorf("audit event %s holds a secret key", b)
			}
		}
	}
}
