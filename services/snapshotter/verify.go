package snapshotter

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/archive"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/bus"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/crypt"
	"github.com/nats-io/nats.go/jetstream"
)

// verifyStored checks a snapshot end to end: the object exists with the
// manifest's size, its bytes hash to the manifest's SHA-256 (and to the object
// store's own digest), every archive entry matches its checksum, and each
// collection's count and content digest match the manifest. An encrypted
// archive is decrypted with the identity; without one only the ciphertext is
// checked, and the report says so (ContentUnchecked).
func (s *Service) verifyStored(ctx context.Context, m *contract.SnapshotManifest) *contract.VerifyReport {
	rep := &contract.VerifyReport{Envelope: contract.NewEnvelope(contract.TypeVerifyReport), SnapshotID: m.SnapshotID}
	fail := func(format string, args ...any) *contract.VerifyReport {
		rep.Problem = fmt.Sprintf(format, args...)
		return rep
	}
	info, err := s.assets.Snapshots.GetInfo(ctx, m.Object)
	if err != nil {
		if bus.IsNotFound(err) {
			return fail("archive object %s is missing from the object store %s", m.Object, contract.ObjectSnapshots)
		}
		return fail("read archive object info %s: %v", m.Object, err)
	}
	rep.Size = int64(info.Size)
	if rep.Size != m.Size {
		return fail("archive object %s is %d bytes, manifest says %d (truncated or replaced)", m.Object, rep.Size, m.Size)
	}
	ar, digest, err := s.verifyObject(ctx, m.Object, m.Encryption)
	rep.SHA256, rep.Encryption = digest, m.Encryption
	switch {
	case errors.Is(err, crypt.ErrNoIdentity):
		// The ciphertext is still checked in full against the manifest.
	case errors.Is(err, crypt.ErrCannotDecrypt):
		return fail("%s", cannotDecrypt(m, err))
	case err != nil:
		// Damaged where it lies, or replaced by another object since (the
		// object store's digest then is not the manifest's).
		if stored, derr := jetstream.DecodeObjectDigest(info.Digest); derr == nil && hex.EncodeToString(stored) != m.SHA256 {
			return fail("archive %s is corrupt: %v; it was replaced after the snapshot: the object store records sha256 %x for it, the manifest says %s",
				m.Object, err, stored, m.SHA256)
		}
		return fail("archive %s is corrupt: %v", m.Object, err)
	}
	if digest != m.SHA256 {
		return fail("archive %s has sha256 %s, manifest says %s", m.Object, digest, m.SHA256)
	}
	if ar == nil {
		rep.ContentUnchecked = noIdentityNote(m)
		rep.OK = true
		return rep
	}
	want := make([]archive.ManifestCollection, len(m.Collections))
	for i, c := range m.Collections {
		want[i] = archive.ManifestCollection{Index: i, ID: c.ID, Name: c.Name, Count: c.Count, Batches: c.Batches, ContentDigest: c.ContentDigest}
	}
	if err := compareCollections(ar, want); err != nil {
		return fail("archive %s does not match its manifest: %v", m.Object, err)
	}
	rep.TotalRecords = ar.TotalRecords
	rep.Collections = m.Collections
	rep.OK = true
	return rep
}
