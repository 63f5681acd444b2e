package restorer

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/crypt"
)

// keyError refuses an archive this restorer cannot decrypt. It is an
// errArchive (a rollback is refused with 422 before anything changes), with
// a message of its own: the archive is not damaged, the key is missing.
type keyError struct {
	msg   string
	class error // crypt.ErrNoIdentity or crypt.ErrCannotDecrypt
}

func (e *keyError) Error() string { return e.msg }

func (e *keyError) Is(target error) bool { return target == errArchive || target == e.class }

// checkDecryptable refuses an encrypted snapshot when this restorer has no
// identity, before its archive is opened, and an unknown encryption.
func (s *Service) checkDecryptable(m *contract.SnapshotManifest) error {
	switch {
	case m.Encryption == "":
		return nil
	case m.Encryption != contract.EncryptionAge:
		return fmt.Errorf("%w: snapshot %s is encrypted with %q; this restorer decrypts %q only", errArchive, m.SnapshotID, m.Encryption, contract.EncryptionAge)
	case s.cfg.Identities == nil:
		return &keyError{class: crypt.ErrNoIdentity, msg: fmt.Sprintf(
			"snapshot %s is encrypted with age (to %s) and this restorer has no identity to decrypt it: "+
				"start the restorer with --age-identity-file (env AGE_IDENTITY_FILE) holding the secret key of one of those recipients",
			m.SnapshotID, strings.Join(m.Recipients, ", "))}
	}
	return nil
}

// decrypt returns the archive inside the object read from src.
func (s *Service) decrypt(m *contract.SnapshotManifest, src io.Reader) (io.Reader, error) {
	if m.Encryption == "" {
		return src, nil
	}
	plain, err := s.cfg.Identities.Decrypt(src)
	if errors.Is(err, crypt.ErrCannotDecrypt) {
		return nil, &keyError{class: crypt.ErrCannotDecrypt, msg: fmt.Sprintf(
			"the archive of snapshot %s is encrypted to %s: %v", m.SnapshotID, strings.Join(m.Recipients, ", "), err)}
	}
	return plain, err
}
