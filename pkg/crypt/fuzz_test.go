package crypt_test

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/archive"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/crypt"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/record"
)

// FuzzDecryptArchive feeds arbitrary bytes, seeded with an encrypted
// archive, through Decrypt into the archive verifier, as a restore reads a
// stored object: it must never panic, and every refusal must carry an error
// class of crypt or archive.
func FuzzDecryptArchive(f *testing.F) {
	key, file := newKey(f)
	id, err := crypt.LoadIdentities(file)
	if err != nil {
		f.Fatal(err)
	}
	recips, err := crypt.ParseRecipients(key.Recipient().String())
	if err != nil {
		f.Fatal(err)
	}
	plain := smallArchive(f)
	ct := encrypt(f, recips, plain)
	f.Add(ct)
	f.Add(ct[:len(ct)/2])
	f.Add(ct[:len(ct)-1])
	head := bytes.Clone(ct)
	head[30] ^= 0x20 // inside the recipient stanza
	f.Add(head)
	f.Add([]byte("age-encryption.org/v1\n-> X25519 \n---"))
	f.Add(plain)
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := id.Decrypt(bytes.NewReader(data))
		if err != nil {
			if !errors.Is(err, crypt.ErrDamaged) && !errors.Is(err, crypt.ErrCannotDecrypt) {
				t.Fatalf("Decrypt: error %v matches no error class", err)
			}
			return
		}
		_, err = archive.VerifyWithLimits(r, archive.Limits{MaxEntrySize: 1 << 20, MaxBatches: 100, MaxCollections: 100})
		if err == nil {
			_, err = io.Copy(io.Discard, r)
		}
		if err != nil && !errors.Is(err, crypt.ErrDamaged) && !errors.Is(err, archive.ErrCorrupt) && !errors.Is(err, archive.ErrTruncated) &&
			!errors.Is(err, archive.ErrChecksumMismatch) && !errors.Is(err, archive.ErrFormat) {
			t.Fatalf("reading the plaintext: error %v matches no error class", err)
		}
	})
}

// smallArchive is a valid native archive of one collection of two records.
func smallArchive(t testing.TB) []byte {
	t.Helper()
	dim := 2
	doc := "a document"
	md := &archive.Metadata{
		SnapshotID: "snap_fuzz", Name: "fuzz", ChromaVersion: "1.0.0", Tenant: "t", Database: "d",
		Collections: []archive.CollectionInfo{{ID: "00000000-0000-0000-0000-000000000001", Name: "c", Dimension: &dim, ExpectedCount: 2}},
	}
	var buf bytes.Buffer
	w, err := archive.NewWriter(&buf, md)
	if err != nil {
		t.Fatal(err)
	}
	err = w.WriteBatch(0, &record.Batch{
		IDs:        []string{"a", "b"},
		Embeddings: [][]float32{{1, 2}, {3, 4}},
		Documents:  []*string{&doc, nil},
		Metadatas:  []record.Metadata{{"k": int64(1)}, nil},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
