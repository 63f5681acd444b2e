// Package natsconn turns the NATS connection settings every program shares
// (the CLI and each service) into nats.Options: a user and password, a
// .creds file, an nkey seed, TLS with a CA and a client certificate, and a
// custom inbox prefix. Each setting is a flag that defaults from an
// environment variable; see deploy/README.md for the users these map to.
//
// Secrets stay out of everything a program prints: the password flag has no
// default (so --help never shows NATS_PASSWORD), Config's String and
// LogValue leave the password out, and Connect's errors carry the server
// URL with any credentials in it redacted.
package natsconn

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"

	"github.com/nats-io/nats.go"
)

// Environment variables read by RegisterFlags and FromEnv.
const (
	EnvUser        = "NATS_USER"
	EnvPassword    = "NATS_PASSWORD"
	EnvCreds       = "NATS_CREDS"
	EnvNKey        = "NATS_NKEY"
	EnvCA          = "NATS_CA"
	EnvCert        = "NATS_CERT"
	EnvKey         = "NATS_KEY"
	EnvInboxPrefix = "NATS_INBOX_PREFIX"
)

// redacted replaces a secret in printed URLs.
const redacted = "xxxxx"

// Config is how a program authenticates to NATS and secures its connection.
// The zero value connects anonymously over plaintext.
type Config struct {
	// User and Password authenticate with a user of the server's config.
	// An empty Password is read from NATS_PASSWORD when the connection is
	// made, so that it need not be passed on the command line.
	User, Password string
	// Creds is a .creds file (a user JWT and its nkey seed).
	Creds string
	// NKey is a file holding an nkey seed (a user of the config with nkey:).
	NKey string
	// CA is a PEM file of the CAs that sign the server's certificate; it
	// turns TLS on.
	CA string
	// Cert and Key are the client certificate and its key, for servers that
	// verify clients (deploy/nats/tls.conf does).
	Cert, Key string
	// InboxPrefix replaces _INBOX for replies. Users whose permissions only
	// allow their own inboxes (migration jobs, dashboards) need it.
	InboxPrefix string
}

// FlagSet is what RegisterFlags needs of a flag set: both the standard
// library's *flag.FlagSet and pflag's *pflag.FlagSet (cobra) have it.
type FlagSet interface {
	StringVar(p *string, name, value, usage string)
}

// FromEnv returns the configuration the environment variables give.
func FromEnv() Config {
	return Config{
		User:        os.Getenv(EnvUser),
		Password:    os.Getenv(EnvPassword),
		Creds:       os.Getenv(EnvCreds),
		NKey:        os.Getenv(EnvNKey),
		CA:          os.Getenv(EnvCA),
		Cert:        os.Getenv(EnvCert),
		Key:         os.Getenv(EnvKey),
		InboxPrefix: os.Getenv(EnvInboxPrefix),
	}
}

// RegisterFlags adds the connection flags to fs, each defaulting from its
// environment variable, except --nats-password, which has no default so
// that help output never shows it: the password is read from NATS_PASSWORD
// when the connection is made.
func (c *Config) RegisterFlags(fs FlagSet) {
	fs.StringVar(&c.User, "nats-user", os.Getenv(EnvUser), "NATS user (env "+EnvUser+"); its password in "+EnvPassword)
	fs.StringVar(&c.Password, "nats-password", "", "NATS password (env "+EnvPassword+", preferred: a flag shows in the process list)")
	fs.StringVar(&c.Creds, "nats-creds", os.Getenv(EnvCreds), "NATS .creds file, a user JWT and its seed (env "+EnvCreds+")")
	fs.StringVar(&c.NKey, "nats-nkey", os.Getenv(EnvNKey), "file holding the NATS user's nkey seed (env "+EnvNKey+")")
	fs.StringVar(&c.CA, "nats-ca", os.Getenv(EnvCA), "PEM file of the CA that signed the NATS server's certificate; turns TLS on (env "+EnvCA+")")
	fs.StringVar(&c.Cert, "nats-cert", os.Getenv(EnvCert), "client certificate (PEM) for NATS TLS (env "+EnvCert+")")
	fs.StringVar(&c.Key, "nats-key", os.Getenv(EnvKey), "key of --nats-cert (PEM) (env "+EnvKey+")")
	fs.StringVar(&c.InboxPrefix, "nats-inbox-prefix", os.Getenv(EnvInboxPrefix), "reply subject prefix instead of _INBOX, for users allowed only their own inboxes (env "+EnvInboxPrefix+")")
}

// password is the password to send: the configured one, else NATS_PASSWORD.
func (c Config) password() string {
	if c.Password != "" {
		return c.Password
	}
	return os.Getenv(EnvPassword)
}

// Validate reports the first setting that cannot work, naming its flag.
func (c Config) Validate() error {
	methods := 0
	for _, set := range []bool{c.User != "", c.Creds != "", c.NKey != ""} {
		if set {
			methods++
		}
	}
	if methods > 1 {
		return errors.New("--nats-user, --nats-creds and --nats-nkey are alternatives: give one")
	}
	if c.User != "" && c.password() == "" {
		return fmt.Errorf("--nats-user %q needs a password: set %s (or --nats-password)", c.User, EnvPassword)
	}
	if c.User == "" && c.Password != "" {
		return errors.New("--nats-password needs --nats-user (or " + EnvUser + ")")
	}
	if (c.Cert == "") != (c.Key == "") {
		return errors.New("--nats-cert and --nats-key go together: give both or neither")
	}
	for _, f := range []struct{ flag, path string }{
		{"--nats-creds", c.Creds}, {"--nats-nkey", c.NKey}, {"--nats-ca", c.CA}, {"--nats-cert", c.Cert}, {"--nats-key", c.Key},
	} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			return fmt.Errorf("%s: %w", f.flag, err)
		}
	}
	if p := c.InboxPrefix; p != "" {
		if strings.ContainsAny(p, "*> \t\r\n") || strings.HasPrefix(p, ".") || strings.HasSuffix(p, ".") || strings.Contains(p, "..") {
			return fmt.Errorf("--nats-inbox-prefix %q: want subject tokens without wildcards, e.g. _INBOX_dashboard", p)
		}
	}
	return nil
}

// Options returns the nats.Options of c, after validating it.
func (c Config) Options() ([]nats.Option, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	var opts []nats.Option
	switch {
	case c.User != "":
		opts = append(opts, nats.UserInfo(c.User, c.password()))
	case c.Creds != "":
		opts = append(opts, nats.UserCredentials(c.Creds))
	case c.NKey != "":
		o, err := nats.NkeyOptionFromSeed(c.NKey)
		if err != nil {
			return nil, fmt.Errorf("--nats-nkey: %w", err)
		}
		opts = append(opts, o)
	}
	if c.CA != "" {
		opts = append(opts, nats.RootCAs(c.CA))
	}
	if c.Cert != "" {
		opts = append(opts, nats.ClientCert(c.Cert, c.Key))
	}
	if c.InboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(c.InboxPrefix))
	}
	return opts, nil
}

// Connect connects to the server(s) at urls (comma-separated) with c's
// options followed by extra. Its error names the URL with any credentials
// in it redacted.
func (c Config) Connect(urls string, extra ...nats.Option) (*nats.Conn, error) {
	opts, err := c.Options()
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(urls, append(opts, extra...)...)
	if err != nil {
		err = fmt.Errorf("connect to NATS at %s: %w", Redact(urls), err)
		if errors.Is(err, nats.ErrAuthorization) || strings.Contains(err.Error(), "Authorization Violation") {
			err = fmt.Errorf("%w (check --nats-user/%s, --nats-creds or --nats-nkey)", err, EnvPassword)
		}
		return nil, err
	}
	return nc, nil
}

// String describes c without secrets.
func (c Config) String() string {
	var parts []string
	switch {
	case c.User != "":
		parts = append(parts, "user "+c.User)
	case c.Creds != "":
		parts = append(parts, "creds "+c.Creds)
	case c.NKey != "":
		parts = append(parts, "nkey "+c.NKey)
	default:
		parts = append(parts, "anonymous")
	}
	if c.CA != "" || c.Cert != "" {
		parts = append(parts, "TLS")
	}
	if c.InboxPrefix != "" {
		parts = append(parts, "inbox "+c.InboxPrefix)
	}
	return strings.Join(parts, ", ")
}

// LogValue logs c without secrets.
func (c Config) LogValue() slog.Value {
	return slog.StringValue(c.String())
}

var _ slog.LogValuer = Config{}

// Redact returns urls (one or several, comma-separated) with the password,
// or a token given as the user, replaced by xxxxx. A URL that does not parse
// is replaced whole, since it may hold a secret.
func Redact(urls string) string {
	parts := strings.Split(urls, ",")
	for i, raw := range parts {
		s := strings.TrimSpace(raw)
		if !strings.Contains(s, "@") {
			parts[i] = s
			continue
		}
		u, err := url.Parse(s)
		if err != nil || u.User == nil {
			parts[i] = "<unparsable URL, redacted>"
			continue
		}
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), redacted)
		} else {
			u.User = url.User(redacted) // a lone user part is a token to NATS
		}
		parts[i] = u.String()
	}
	return strings.Join(parts, ",")
}
