// Command dashboard is an example of what a dashboard runs against the
// audit stream: it reads every event in CHROMA_AUDIT and prints rollbacks and
// snapshots per day, triggers fired, alerts raised and failures by reason.
//
// By default it resumes: a durable consumer (--durable) remembers in the
// server how far the dashboard has read, and the figures so far are kept in
// a state file (--state) written before the messages are acknowledged, so
// each event is counted once across restarts. --replay instead reads the
// whole stream from its first message with an ordered consumer and keeps
// nothing. --follow keeps reading and prints the figures every --interval.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is the whole program; tests call it in-process.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, err := parseConfig(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintln(stderr, "dashboard:", err)
		return exitUsage
	}
	if err := dashboard(ctx, cfg, stdout); err != nil {
		fmt.Fprintln(stderr, "dashboard:", err)
		return exitError
	}
	return exitOK
}
