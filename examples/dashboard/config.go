package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/natsconn"
)

// config is the dashboard's configuration: flags, each defaulting from an
// environment variable.
type config struct {
	NATSURL string
	// NATS authenticates the connection (natsconn flags: --nats-user, --nats-creds, --nats-ca ...).
	NATS     natsconn.Config
	Stream   string
	Durable  string
	State    string
	Replay   bool
	Follow   bool
	Interval time.Duration
	JSON     bool
}

func env(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}

// parseConfig reads the flags and validates them.
func parseConfig(args []string, stderr io.Writer) (*config, error) {
	fs := flag.NewFlagSet("dashboard", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := &config{}
	fs.StringVar(&c.NATSURL, "nats-url", env("NATS_URL", "nats://127.0.0.1:4222"), "NATS server (env NATS_URL)")
	c.NATS.RegisterFlags(fs)
	fs.StringVar(&c.Stream, "stream", contract.StreamAudit, "the audit stream")
	fs.StringVar(&c.Durable, "durable", env("DASHBOARD_DURABLE", "dashboard"), "durable consumer that remembers how far this dashboard has read (env DASHBOARD_DURABLE)")
	fs.StringVar(&c.State, "state", env("DASHBOARD_STATE", "dashboard-state.json"), "file keeping the figures between runs, written before messages are acknowledged (env DASHBOARD_STATE)")
	fs.BoolVar(&c.Replay, "replay", false, "read the whole stream from the start with an ordered consumer; keeps no state and no durable")
	fs.BoolVar(&c.Follow, "follow", false, "keep reading new events; print the figures every --interval")
	fs.DurationVar(&c.Interval, "interval", time.Minute, "with --follow, how often the figures are printed")
	fs.BoolVar(&c.JSON, "json", false, "print the figures as JSON")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	switch {
	case c.NATSURL == "":
		return nil, errors.New("--nats-url is empty")
	case contract.ValidToken(c.Stream) != nil:
		return nil, fmt.Errorf("--stream %q is not a stream name", c.Stream)
	case !c.Replay && contract.ValidToken(c.Durable) != nil:
		return nil, fmt.Errorf("--durable %q: use letters, digits, '-' and '_'", c.Durable)
	case !c.Replay && c.State == "":
		return nil, errors.New("--state is empty: the figures must be kept where the durable consumer's position is")
	case c.Follow && c.Interval <= 0:
		return nil, fmt.Errorf("--interval %s must be positive", c.Interval)
	}
	return c, nil
}
