// Command migration-job is an example migration job: it copies the
// collections of a Chroma database to another database (or rewrites them in
// place), transforming every record on the way, and speaks the migration
// protocol of chromadb-rollback through the Go SDK (pkg/migration), so the
// watchdog can roll the database back when the result does not validate or
// the job overruns its time limit. It talks to Chroma with chroma-go v0.4.0,
// as users' Go jobs do; README.md says what that client cannot carry.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/migration"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailed  = 1 // the migration failed (reported as failed)
	exitUsage   = 2 // bad flags; nothing was sent
	exitAborted = 3 // told to abort (time limit, operator); reported as failed
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stderr)
	stop()
	os.Exit(code)
}

// run is the whole program; tests call it in-process.
func run(ctx context.Context, args []string, stderr io.Writer) int {
	cfg, err := parseConfig(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintln(stderr, "migration-job:", err)
		return exitUsage
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: cfg.LogLevel})).With("job", cfg.Job)
	err = migrate(ctx, cfg, log)
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, migration.ErrAborted):
		log.Warn("migration aborted", "err", err)
		return exitAborted
	default:
		log.Error("migration failed", "err", err)
		return exitFailed
	}
}
