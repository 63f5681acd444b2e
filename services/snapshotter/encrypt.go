package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/archive"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/legacy"
)

// Archives at rest: with Config.Recipients every new archive (snapshot,
// safety snapshot, import) is one age file in the object store; the
// manifest's size and sha256 are the ciphertext's, and it names the
// encryption and the recipients. Writing needs no identity. Reading the
// content back (a full verify, importing an encrypted file) needs
// Config.Identities; without it verify checks the ciphertext only and says so.

// sealing is an archive on its way into the object store: encrypted to
// the recipients when there are any, and then, if asked, verified as it is
// written, since the stored bytes may not be readable here.
type sealing struct {
	// w takes the archive's plaintext.
	w       io.Writer
	enc     io.WriteCloser
	vw      *io.PipeWriter
	checked chan verifiedArchive
}

type verifiedArchive struct {
	rep *archive.Report
	err error
}

// seal returns where an archive's plaintext goes on its way to dst. With
// verify and recipients, the plaintext is also read by archive.Verify.
func (s *Service) seal(dst io.Writer, verify bool) (*sealing, error) {
	if s.cfg.Recipients == nil {
		return &sealing{w: dst}, nil
	}
	enc, err := s.cfg.Recipients.Encrypt(dst)
	if err != nil {
		return nil, err
	}
	sl := &sealing{w: enc, enc: enc}
	if verify {
		vr, vw := io.Pipe()
		sl.vw, sl.checked = vw, make(chan verifiedArchive, 1)
		sl.w = io.MultiWriter(enc, vw)
		go func() {
			rep, err := archive.Verify(vr)
			_, _ = io.Copy(io.Discard, vr) // never block the writer, even after a failure
			sl.checked <- verifiedArchive{rep, err}
		}()
	}
	return sl, nil
}

// close ends the archive after its writer returned err (and, with verify,
// the manifest man it wrote). Only a whole archive gets age's last chunk:
// a failed one never decrypts.
func (sl *sealing) close(err error, man *archive.Manifest) error {
	if err == nil && sl.enc != nil {
		if err = sl.enc.Close(); err != nil {
			err = fmt.Errorf("finish age encryption: %w", err)
		}
	}
	if sl.vw == nil {
		return err
	}
	sl.vw.CloseWithError(err)
	v := <-sl.checked
	switch {
	case err != nil:
		return err
	case v.err != nil:
		return fmt.Errorf("verify archive as written: %w", v.err)
	case man != nil:
		if err := compareCollections(v.rep, man.Collections); err != nil {
			return fmt.Errorf("verify archive as written: %w", err)
		}
	}
	return nil
}

// encryption is what a new archive's manifest records.
func (s *Service) encryption() (string, []string) {
	if s.cfg.Recipients == nil {
		return "", nil
	}
	return contract.EncryptionAge, s.cfg.Recipients.Keys()
}

// plaintext returns the archive inside a stored object read from src, per
// its manifest's encryption. crypt.ErrNoIdentity: it is encrypted and this
// snapshotter has no identity.
func (s *Service) plaintext(src io.Reader, encryption string) (io.Reader, error) {
	switch encryption {
	case "":
		return src, nil
	case contract.EncryptionAge:
		return s.cfg.Identities.Decrypt(src)
	}
	return nil, fmt.Errorf("unknown encryption %q: this snapshotter reads unencrypted archives and %q", encryption, contract.EncryptionAge)
}

// noIdentityNote says why a verify checked only the ciphertext.
func noIdentityNote(m *contract.SnapshotManifest) string {
	return fmt.Sprintf("content not checked: the archive is encrypted with %s (to %s) and this snapshotter has no identity; "+
		"only the stored object was checked (present, %d bytes, sha256 of the ciphertext as stored when the snapshot was verified). "+
		"Give the snapshotter --age-identity-file (env AGE_IDENTITY_FILE) to check every record",
		m.Encryption, strings.Join(m.Recipients, ", "), m.Size)
}

// cannotDecrypt says which keys an archive needs when the identity does not fit.
func cannotDecrypt(m *contract.SnapshotManifest, err error) string {
	return fmt.Sprintf("archive %s is encrypted to %s: %v", m.Object, strings.Join(m.Recipients, ", "), err)
}

// sniffEncrypted tells what an encrypted staged file holds: only a native
// archive is imported from one, and only with an identity to decrypt it.
func (s *Service) sniffEncrypted(ctx context.Context, obj string) (string, error) {
	if s.cfg.Identities == nil {
		return "", &apiError{code: contract.CodeVerificationFailed, field: "object",
			msg: "file refused: it is encrypted with age and this snapshotter has no identity to decrypt it: " +
				"give the snapshotter --age-identity-file (env AGE_IDENTITY_FILE) holding the secret key of one of its recipients, " +
				"or import the decrypted file (age -d -i KEY FILE > FILE.tar.zst)"}
	}
	res, err := s.assets.Snapshots.Get(ctx, obj)
	if err != nil {
		return "", fmt.Errorf("open staged object %s: %w", obj, err)
	}
	defer res.Close()
	plain, err := s.cfg.Identities.Decrypt(res)
	if err != nil {
		return "", err
	}
	head := make([]byte, legacy.SniffLen)
	n, err := io.ReadFull(plain, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return "", err
	}
	f, err := legacy.Sniff(head[:n])
	if err != nil {
		return "", fmt.Errorf("decrypted %w", err)
	}
	if f != legacy.FormatNative {
		return "", &apiError{code: contract.CodeVerificationFailed, field: "object",
			msg: "file refused: it is an encrypted seed archive (.tar.gz); decrypt it (age -d) and import the .tar.gz with its manifest"}
	}
	return contract.ImportFormatNative, nil
}
