package restorer_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"filippo.io/age"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/crypt"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
	"github.com/chromadb-rollback/chromadb-rollback/services/restorer"
	"github.com/chromadb-rollback/chromadb-rollback/services/snapshotter"
	"github.com/klauspost/compress/zstd"
	"github.com/nats-io/nats.go"
)

// TestEncryptedRollback is acceptance 4 of issue 6: a snapshot taken by a
// snapshotter with age recipients (and no identity) is stored as
// ciphertext holding no document text or embedding bytes of the fixture;
// without the identity, and with a wrong one, a rollback to it is refused
// before anything changes; with the identity it restores every record
// exactly, and the rollback's safety snapshot is encrypted too. Without
// recipients snapshots stay plain and restore without any identity.
func TestEncryptedRollback(t *testing.T) {
	e := newEnv(t)
	if _, err := testenv.SeedFixture(t.Context(), e.cc); err != nil {
		t.Fatalf("seed fixture: %v", err)
	}
	key, wrong := newIdentity(t), newIdentity(t)
	recipients, err := crypt.ParseRecipients(key.pub)
	if err != nil {
		t.Fatal(err)
	}
	stopSnapshotter := e.run(t, "snapshotter", func(nc *nats.Conn) (interface{ Run(context.Context) error }, error) {
		return snapshotter.New(snapshotter.Config{ChromaURL: e.chroma.URL, MaxPageRecords: 64, Recipients: recipients}, nc, e.subj, e.cc, testLogger(t))
	})
	waitForService(t, e.nats.Conn, e.subj.API("snapshot", "list"))

	pre := e.dump(t, "acme", "prod")
	snap := e.snapshot(t, "acme", "prod", "sealed_pre")
	m, stored := e.storedArchive(t, snap)

	t.Run("stored object holds no plaintext", func(t *testing.T) {
		if m.Encryption != contract.EncryptionAge || !slices.Equal(m.Recipients, []string{key.pub}) {
			t.Errorf("manifest: encryption %q, recipients %q", m.Encryption, m.Recipients)
		}
		if sum := sha256.Sum256(stored); !bytes.HasPrefix(stored, []byte("age-encryption.org/v1\n")) || hex.EncodeToString(sum[:]) != m.SHA256 || int64(len(stored)) != m.Size {
			t.Errorf("object: %d bytes starting %q; manifest %d bytes, sha256 %s", len(stored), stored[:min(len(stored), 22)], m.Size, m.SHA256)
		}
		if dec, err := zstd.NewReader(bytes.NewReader(stored)); err == nil {
			if _, err := io.ReadAll(dec); err == nil {
				t.Error("the stored object decompresses as zstd")
			}
			dec.Close()
		}
		probes := fixtureProbes(pre)
		if len(probes) < 1000 {
			t.Fatalf("only %d probes from the fixture", len(probes))
		}
		// The same probes are found in the decrypted, decompressed archive,
		// so not finding them in the object means something.
		plain := decryptArchive(t, key.ids, stored)
		missing := 0
		for _, p := range probes {
			if !bytes.Contains(plain, p.bytes) {
				missing++
				if missing < 6 {
					t.Logf("not in the plaintext: %s: %q", p.what, p.bytes)
				}
			}
			if bytes.Contains(stored, p.bytes) {
				t.Errorf("the stored object holds %s in plaintext", p.what)
			}
		}
		if missing > 0 {
			t.Errorf("%d of %d probes are not in the decrypted archive either", missing, len(probes))
		}
	})

	damage(t, e.cc, 1)
	damaged := e.dump(t, "acme", "prod")
	refused := func(t *testing.T, ids *crypt.Identities, want ...string) {
		t.Helper()
		stop := e.startRestorer(t, restorer.Config{Instance: "restorer", Identities: ids}, nil)
		defer stop()
		for _, tc := range []struct {
			subject string
			req     contract.RollbackRequest
		}{
			{e.subj.API("rollback", "plan"), contract.RollbackRequest{SnapshotID: snap}},
			{e.subj.API("rollback", "plan"), contract.RollbackRequest{SnapshotID: snap, InPlace: true}},
			{e.subj.API("rollback", "start"), contract.RollbackRequest{SnapshotID: snap, Confirm: true, Actor: "test"}},
			{e.subj.API("rollback", "start"), contract.RollbackRequest{SnapshotID: snap, Batches: map[string][]string{"corpus.v1": {"batch_000000"}}, Confirm: true, Actor: "test"}},
		} {
			code, eb := e.requestError(t, tc.subject, tc.req)
			t.Logf("%s: %d %s", tc.subject, code, eb.Error)
			if code != contract.CodeVerificationFailed {
				t.Errorf("%s %+v: code %d, want %d: %s", tc.subject, tc.req, code, contract.CodeVerificationFailed, eb.Error)
			}
			// The archive is whole: a restorer given the key restores it.
			if eb.ErrorCode != "" {
				t.Errorf("%s %+v: error_code %q, want none", tc.subject, tc.req, eb.ErrorCode)
			}
			for _, w := range append(want, "refusing to restore snapshot "+snap, "nothing was changed") {
				if !strings.Contains(eb.Error, w) {
					t.Errorf("refusal %q does not say %q", eb.Error, w)
				}
			}
		}
		if n := e.commands(t, "rollback"); n != 0 {
			t.Errorf("%d rollback commands enqueued", n)
		}
		compareDB(t, "after refusals", e.dump(t, "acme", "prod"), damaged, nil)
		e.assertReleased(t)
	}
	t.Run("refused without the identity", func(t *testing.T) {
		refused(t, nil, "encrypted with age", key.pub, "no identity", "--age-identity-file", "AGE_IDENTITY_FILE")
	})
	t.Run("refused with a wrong identity", func(t *testing.T) {
		refused(t, wrong.ids, "cannot decrypt", key.pub, wrong.pub)
	})

	t.Run("restores exactly with the identity", func(t *testing.T) {
		stop := e.startRestorer(t, restorer.Config{Instance: "restorer", Identities: key.ids}, nil)
		defer stop()
		op := e.rollback(t, contract.RollbackRequest{SnapshotID: snap, DropExtra: true})
		compareDB(t, "after rollback", e.dump(t, "acme", "prod"), pre, nil)
		if op.Restore == nil || !op.Restore.Verified || op.Restore.SafetySnapshotID == "" {
			t.Fatalf("report %s", mustJSON(t, op.Restore))
		}
		// The safety snapshot (of the damaged state) is encrypted too.
		sm, sobj := e.storedArchive(t, op.Restore.SafetySnapshotID)
		if sm.Encryption != contract.EncryptionAge || !slices.Equal(sm.Recipients, []string{key.pub}) || !bytes.HasPrefix(sobj, []byte("age-encryption.org/v1\n")) {
			t.Errorf("safety snapshot: encryption %q, recipients %q, object starts %q", sm.Encryption, sm.Recipients, sobj[:min(len(sobj), 22)])
		}
		for _, p := range fixtureProbes(damaged) {
			if bytes.Contains(sobj, p.bytes) {
				t.Fatalf("the safety snapshot's object holds %s in plaintext", p.what)
			}
		}
		if ev := findAudit(e.auditEvents(t), "rollback", contract.OutcomeCompleted); len(ev) != 1 || ev[0].SnapshotID != snap {
			t.Errorf("completed rollback audit events: %+v", ev)
		}
		e.assertReleased(t)
	})

	t.Run("plain snapshots need no identity", func(t *testing.T) {
		stopSnapshotter()
		e.startSnapshotter(t) // no recipients
		stop := e.startRestorer(t, restorer.Config{Instance: "restorer"}, nil)
		defer stop()
		staging := e.dump(t, "acme", "staging")
		plain := e.snapshot(t, "acme", "staging", "plain_pre")
		pm, pobj := e.storedArchive(t, plain)
		if pm.Encryption != "" || pm.Recipients != nil || !bytes.HasPrefix(pobj, []byte{0x28, 0xb5, 0x2f, 0xfd}) {
			t.Errorf("plain snapshot: encryption %q, recipients %q, object starts %x", pm.Encryption, pm.Recipients, pobj[:4])
		}
		coll, err := e.cc.GetCollection(t.Context(), "acme", "staging", "corpus.v1")
		if err != nil {
			t.Fatal(err)
		}
		if err := e.cc.Delete(t.Context(), "acme", "staging", coll.ID, staging["corpus.v1"].Records.IDs[:10]); err != nil {
			t.Fatal(err)
		}
		e.rollback(t, contract.RollbackRequest{SnapshotID: plain})
		compareDB(t, "after plain rollback", e.dump(t, "acme", "staging"), staging, nil)
	})

	// No secret key reached the audit trail.
	for _, ev := range e.auditEvents(t) {
		b, _ := json.Marshal(ev)
		for _, k := range []identity{key, wrong} {
			if strings.Contains(string(b), k.secret) {
				t.Errorf("audit event %s holds a secret key", b)
			}
		}
	}
}

// identity is a generated age key: its secret in a file, loaded.
type identity struct {
	pub, secret string
	ids         *crypt.Identities
}

func newIdentity(t *testing.T) identity {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "key.txt")
	if err := os.WriteFile(file, fmt.Appendf(nil, "# public key: %s\n%s\n", id.Recipient(), id), 0o600); err != nil {
		t.Fatal(err)
	}
	ids, err := crypt.LoadIdentities(file)
	if err != nil {
		t.Fatal(err)
	}
	return identity{pub: id.Recipient().String(), secret: id.String(), ids: ids}
}

// storedArchive returns a snapshot's manifest and its object's bytes.
func (e *env) storedArchive(t *testing.T, snapshotID string) (*contract.SnapshotManifest, []byte) {
	t.Helper()
	m := e.storedManifest(t, snapshotID)
	data, err := e.nats.Assets.Snapshots.GetBytes(t.Context(), m.Object)
	if err != nil {
		t.Fatal(err)
	}
	return m, data
}

// decryptArchive returns the decompressed tar stream of an encrypted archive.
func decryptArchive(t *testing.T, ids *crypt.Identities, stored []byte) []byte {
	t.Helper()
	plain, err := ids.Decrypt(bytes.NewReader(stored))
	if err != nil {
		t.Fatal(err)
	}
	dec, err := zstd.NewReader(plain)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	tar, err := io.ReadAll(dec)
	if err != nil {
		t.Fatal(err)
	}
	return tar
}

type probe struct {
	what  string
	bytes []byte
}

// fixtureProbes are byte strings an archive of the state holds in its
// plaintext: from every document of 16 bytes or more its first and last 16
// bytes (as JSON writes them, without HTML escapes), and from every embedding of 4 values or more
// its first and last 4 values as little-endian float32 (as the .f32 entries
// hold them, as Chroma returned them).
func fixtureProbes(s dbState) []probe {
	var out []probe
	for name, c := range s {
		r := c.Records
		for i, id := range r.IDs {
			if d := r.Documents[i]; d != nil {
				var buf bytes.Buffer
				enc := json.NewEncoder(&buf)
				enc.SetEscapeHTML(false)
				_ = enc.Encode(*d)
				js := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
				js = js[1 : len(js)-1]
				if len(js) >= 16 {
					out = append(out,
						probe{fmt.Sprintf("the start of %s/%q's document", name, id), js[:16]},
						probe{fmt.Sprintf("the end of %s/%q's document", name, id), js[len(js)-16:]})
				}
			}
			if v := r.Embeddings[i]; len(v) >= 4 {
				out = append(out,
					probe{fmt.Sprintf("the first values of %s/%q's embedding", name, id), f32(v[:4])},
					probe{fmt.Sprintf("the last values of %s/%q's embedding", name, id), f32(v[len(v)-4:])})
			}
		}
	}
	return out
}

func f32(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}
