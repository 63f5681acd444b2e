// Package svcmain is what the services' mains share: running until a
// signal, defaults from the environment, the instance name, the logger,
// the Chroma client settings and help text that shows no credentials.
package svcmain

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/natsconn"
)

// Main runs run with the program's arguments until SIGINT or SIGTERM and
// exits 1, naming the program, when it fails; -help exits 0.
func Main(name string, run func(ctx context.Context, args []string) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, name+":", err)
		os.Exit(1)
	}
}

// Env is the value of key, or def when it is unset or empty.
func Env(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// EnvParse reads key with parse, keeping def when unset; a value that does
// not parse is added to errs, naming the variable.
func EnvParse[T any](errs *[]error, key string, def T, parse func(string) (T, error)) T {
	v := os.Getenv(key)
	if v == "" {
		return def
	}
	out, err := parse(v)
	if err != nil {
		*errs = append(*errs, fmt.Errorf("%s=%q: %w", key, v, err))
		return def
	}
	return out
}

// MemoryLimit registers -memory-limit-mib (env MEMORY_LIMIT_MIB, default
// def) and returns a function that applies it: a soft limit of the Go
// heap, so that the collector runs before the heap grows to twice the
// live set (a service holds batches of tens of MB that come and go
// quickly). GOMEMLIMIT, when set, wins; 0 sets none.
func MemoryLimit(fs *flag.FlagSet, def int) func() {
	if v, err := strconv.Atoi(os.Getenv("MEMORY_LIMIT_MIB")); err == nil {
		def = v
	}
	mib := fs.Int("memory-limit-mib", def, "soft limit of the Go heap in MiB, 0 for none; GOMEMLIMIT wins when set (env MEMORY_LIMIT_MIB)")
	return func() {
		if *mib > 0 && os.Getenv("GOMEMLIMIT") == "" {
			debug.SetMemoryLimit(int64(*mib) << 20)
		}
	}
}

// Instance is the default instance name of a service: $INSTANCE, else
// service-host-pid, unique on a host, because leases, claims and the
// watchdog's records tell instances apart by it.
func Instance(service string) string {
	if v := os.Getenv("INSTANCE"); v != "" {
		return v
	}
	h, _ := os.Hostname()
	return fmt.Sprintf("%s-%s-%d", service, h, os.Getpid())
}

// Logger is the text logger on stderr at $LOG_LEVEL (default info).
func Logger() (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(Env("LOG_LEVEL", "info"))); err != nil {
		return nil, fmt.Errorf("LOG_LEVEL: %w", err)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})), nil
}

// RedactDefaults keeps credentials in URL flags' defaults (taken from the
// environment) out of -help: the flags named are NATS or Chroma URLs.
func RedactDefaults(fs *flag.FlagSet, names ...string) {
	for _, name := range names {
		f := fs.Lookup(name)
		if f == nil {
			continue
		}
		if strings.Contains(name, "nats") {
			f.DefValue = natsconn.Redact(f.DefValue)
		} else {
			f.DefValue = chroma.RedactURL(f.DefValue)
		}
	}
}

// Chroma is how a service reaches Chroma: the URL, and the token from
// $CHROMA_TOKEN (never a flag, so it is not in a process listing) sent in
// the header AuthHeader names.
type Chroma struct {
	URL        string
	AuthHeader string
	Token      string
}

// Register adds --chroma-url and --chroma-auth-header to fs.
func (c *Chroma) Register(fs *flag.FlagSet, urlHelp string) {
	fs.StringVar(&c.URL, "chroma-url", os.Getenv("CHROMA_URL"), urlHelp+" (env CHROMA_URL; its token in CHROMA_TOKEN)")
	fs.StringVar(&c.AuthHeader, "chroma-auth-header", Env("CHROMA_AUTH_HEADER", "x-chroma-token"), "how the token is sent: x-chroma-token or bearer (env CHROMA_AUTH_HEADER)")
	RedactDefaults(fs, "chroma-url")
}

// Header is the auth header the settings name.
func (c *Chroma) Header() (chroma.AuthHeader, error) {
	switch strings.ToLower(c.AuthHeader) {
	case "x-chroma-token", "":
		return chroma.AuthXChromaToken, nil
	case "bearer", "authorization":
		return chroma.AuthBearer, nil
	}
	return 0, fmt.Errorf("--chroma-auth-header %q: want x-chroma-token or bearer", c.AuthHeader)
}

// Client checks the settings and returns the client; extra options come
// after the token and header.
func (c *Chroma) Client(log *slog.Logger, extra ...chroma.Option) (*chroma.Client, error) {
	if c.URL == "" {
		return nil, errors.New("--chroma-url (or CHROMA_URL) is required")
	}
	h, err := c.Header()
	if err != nil {
		return nil, err
	}
	if c.Token == "" {
		c.Token = os.Getenv("CHROMA_TOKEN")
	}
	opts := []chroma.Option{chroma.WithLogger(log), chroma.WithAuthHeader(h)}
	if c.Token != "" {
		opts = append(opts, chroma.WithToken(c.Token))
	}
	return chroma.New(c.URL, append(opts, extra...)...)
}
