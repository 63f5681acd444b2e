package crypt

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"

	"filippo.io/age"
)

// header starts every binary age file.
const header = "age-encryption.org/v1\n"

// maxKeyFile bounds a recipients or identity file: a key is one short line.
const maxKeyFile = 1 << 20

// Error classes; match them with errors.Is.
var (
	// ErrNoIdentity means an archive is encrypted and no identity is
	// configured to decrypt it.
	ErrNoIdentity = errors.New("the archive is encrypted with age and no identity is configured")
	// ErrCannotDecrypt means no configured identity matches a recipient
	// of the archive.
	ErrCannotDecrypt = errors.New("cannot decrypt")
	// ErrDamaged means the ciphertext is not a whole, unaltered age file.
	ErrDamaged = errors.New("encrypted archive is damaged")
)

// IsEncrypted reports whether head, the first bytes of a file, starts an
// age file (binary, as the snapshotter writes them).
func IsEncrypted(head []byte) bool {
	return bytes.HasPrefix(head, []byte(header))
}

// Recipients are the X25519 public keys new archives are encrypted to.
type Recipients struct {
	keys []string
	rs   []age.Recipient
}

// ParseRecipients parses age X25519 public keys (age1...), dropping
// repeats. It returns nil when there are none.
func ParseRecipients(keys ...string) (*Recipients, error) {
	r := &Recipients{}
	for _, k := range keys {
		k = strings.TrimSpace(k)
		if k == "" {
			continue
		}
		if err := r.add(k); err != nil {
			return nil, err
		}
	}
	if len(r.keys) == 0 {
		return nil, nil
	}
	return r, nil
}

func (r *Recipients) add(k string) error {
	if strings.HasPrefix(strings.ToUpper(k), "AGE-SECRET-KEY-") {
		// Never echo it: it is a secret given in the wrong place.
		return errors.New("a secret key (AGE-SECRET-KEY-1...) was given as a recipient: give its public key (age1..., `age-keygen -y FILE` prints it) and keep the secret key for the restorer's identity file")
	}
	x, err := age.ParseX25519Recipient(k)
	if err != nil {
		return fmt.Errorf("recipient %q is not an age X25519 public key (age1...): %v", k, err)
	}
	for _, have := range r.keys {
		if have == x.String() {
			return nil
		}
	}
	r.keys = append(r.keys, x.String())
	r.rs = append(r.rs, x)
	return nil
}

// LoadRecipients reads recipients from a list (separated by commas or
// white space) and a file (one per line, '#' starts a comment line), either
// of which may be empty. It returns nil when neither names any.
func LoadRecipients(list, file string) (*Recipients, error) {
	keys := strings.FieldsFunc(list, func(c rune) bool { return c == ',' || c == ' ' || c == '\t' || c == '\n' || c == '\r' })
	if file != "" {
		lines, err := readKeyFile(file)
		if err != nil {
			return nil, fmt.Errorf("recipients file: %w", err)
		}
		if len(lines) == 0 {
			return nil, fmt.Errorf("recipients file %s holds no recipient", file)
		}
		for _, l := range lines {
			keys = append(keys, l.text)
		}
	}
	return ParseRecipients(keys...)
}

// Keys are the public keys, as recorded in a manifest.
func (r *Recipients) Keys() []string {
	if r == nil {
		return nil
	}
	return append([]string(nil), r.keys...)
}

// Encrypt returns a writer that encrypts what is written to it into dst.
// Close writes the last chunk; without it the age file is incomplete and
// never decrypts (which is what a failed archive should be).
func (r *Recipients) Encrypt(dst io.Writer) (io.WriteCloser, error) {
	w, err := age.Encrypt(dst, r.rs...)
	if err != nil {
		return nil, fmt.Errorf("start age encryption: %w", err)
	}
	return w, nil
}

// String lists the public keys.
func (r *Recipients) String() string {
	if r == nil {
		return "none"
	}
	return strings.Join(r.keys, ",")
}

// Identities are X25519 secret keys that decrypt archives. They print and
// log as their file and public keys, never as the secret keys.
type Identities struct {
	file string
	pubs []string
	ids  []age.Identity
}

// LoadIdentities reads an age identity file: X25519 secret keys
// (AGE-SECRET-KEY-1...), one per line, '#' starting a comment line, as
// age-keygen writes it. It returns nil for an empty path. Errors name the
// line at fault and never its content.
func LoadIdentities(path string) (*Identities, error) {
	if path == "" {
		return nil, nil
	}
	lines, err := readKeyFile(path)
	if err != nil {
		return nil, fmt.Errorf("identity file: %w", err)
	}
	id := &Identities{file: path}
	for _, l := range lines {
		switch {
		case strings.HasPrefix(l.text, "age1"):
			return nil, fmt.Errorf("identity file %s line %d is a public key (a recipient), not an identity: give the file holding the secret key (AGE-SECRET-KEY-1...)", path, l.n)
		case !strings.HasPrefix(strings.ToUpper(l.text), "AGE-SECRET-KEY-1"):
			return nil, fmt.Errorf("identity file %s line %d is not an age X25519 identity (AGE-SECRET-KEY-1...); plugin and passphrase identities are not supported", path, l.n)
		}
		x, err := age.ParseX25519Identity(l.text)
		if err != nil {
			// age's error may quote the key: do not pass it on.
			return nil, fmt.Errorf("identity file %s line %d is not a valid age X25519 identity (malformed AGE-SECRET-KEY-1... key)", path, l.n)
		}
		id.ids = append(id.ids, x)
		id.pubs = append(id.pubs, x.Recipient().String())
	}
	if len(id.ids) == 0 {
		return nil, fmt.Errorf("identity file %s holds no identity (AGE-SECRET-KEY-1...)", path)
	}
	return id, nil
}

// Recipients are the public keys of the identities.
func (id *Identities) Recipients() []string {
	if id == nil {
		return nil
	}
	return append([]string(nil), id.pubs...)
}

// CanDecrypt says whether identities with the public keys pubs (as
// Identities.Recipients gives them) can decrypt what was encrypted to
// recipients: one of them must be among the recipients.
func CanDecrypt(recipients, pubs []string) bool {
	return slices.ContainsFunc(pubs, func(p string) bool { return slices.Contains(recipients, p) })
}

// File is the path the identities were read from.
func (id *Identities) File() string {
	if id == nil {
		return ""
	}
	return id.file
}

// String names the file and the public keys only.
func (id *Identities) String() string {
	if id == nil {
		return "none"
	}
	return fmt.Sprintf("age identities in %s (public keys %s)", id.file, strings.Join(id.pubs, ", "))
}

// GoString keeps %#v from printing the secret keys.
func (id *Identities) GoString() string { return id.String() }

// LogValue keeps a logged Identities to its file and public keys.
func (id *Identities) LogValue() slog.Value {
	if id == nil {
		return slog.StringValue("none")
	}
	return slog.GroupValue(slog.String("file", id.file), slog.String("public_keys", strings.Join(id.pubs, ",")))
}

// Decrypt returns the plaintext of the age file read from src. A nil
// Identities gives ErrNoIdentity. A header no identity opens gives
// ErrCannotDecrypt; damaged ciphertext, now or while reading, ErrDamaged.
// An error of src itself is returned as it is.
func (id *Identities) Decrypt(src io.Reader) (io.Reader, error) {
	if id == nil {
		return nil, ErrNoIdentity
	}
	s := &source{r: src}
	r, err := age.Decrypt(s, id.ids...)
	if err != nil {
		if s.err != nil {
			return nil, s.err
		}
		if _, ok := errors.AsType[*age.NoIdentityMatchError](err); ok {
			return nil, fmt.Errorf("%w: none of the identities in %s (public keys %s) is a recipient of the archive", ErrCannotDecrypt, id.file, strings.Join(id.pubs, ", "))
		}
		return nil, fmt.Errorf("%w: %v", ErrDamaged, err)
	}
	return &plaintext{r: r, src: s}, nil
}

// source remembers the first error of the ciphertext's reader, so that
// Decrypt can tell it from damage.
type source struct {
	r   io.Reader
	err error
}

func (s *source) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) && s.err == nil {
		s.err = err
	}
	return n, err
}

// plaintext classifies age's read errors.
type plaintext struct {
	r   io.Reader
	src *source
}

func (p *plaintext) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if err == nil || errors.Is(err, io.EOF) {
		return n, err
	}
	if p.src.err != nil {
		return n, p.src.err
	}
	return n, fmt.Errorf("%w: %v", ErrDamaged, err)
}

// keyLine is one key of a key file and its line number.
type keyLine struct {
	n    int
	text string
}

// readKeyFile returns the non-empty, non-comment lines of a small file.
func readKeyFile(path string) ([]keyLine, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > maxKeyFile {
		return nil, fmt.Errorf("%s is larger than %d bytes; a key file holds a few short lines", path, maxKeyFile)
	}
	var out []keyLine
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), maxKeyFile)
	for n := 1; sc.Scan(); n++ {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		out = append(out, keyLine{n: n, text: l})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return out, nil
}
