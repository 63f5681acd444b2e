package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/natsconn"
	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"
)

// Exit codes, documented in the README.
const (
	exitOK           = 0
	exitFailed       = 1
	exitUsage        = 2
	exitVerification = 3
)

// exitError carries the exit code a failure maps to.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// groupRunE runs a command that only groups others (snapshot, audit):
// alone it prints its help; with an unknown subcommand it fails with exit
// 2, where cobra printed the help and exited 0, which a script reads as
// success: `snapshot verfy ID` verified nothing and said OK.
func groupRunE(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return cmd.Help()
	}
	msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
	if cmd.SuggestionsMinimumDistance <= 0 {
		cmd.SuggestionsMinimumDistance = 2 // as cobra's for the root command
	}
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		msg += fmt.Sprintf("; did you mean %s?", strings.Join(s, " or "))
	}
	return usageErr("%s (see `%s --help`)", msg, cmd.CommandPath())
}

func usageErr(format string, args ...any) error {
	return &exitError{code: exitUsage, err: fmt.Errorf(format, args...)}
}

// app is the state shared by every command.
type app struct {
	natsURL string
	conn    natsconn.Config
	prefix  string
	json    bool
	timeout time.Duration
	actor   string

	stdin          io.Reader
	stdout, stderr io.Writer
	subj           contract.Subjects
	// connEvents carries what happened to the NATS connection (lost,
	// back) from the client's callbacks to a command that waits (for an
	// operation, or following the audit trail), which prints it.
	connEvents chan connEvent
}

// connEvent is the NATS connection lost (with why) or back.
type connEvent struct {
	lost bool
	msg  string
}

// text is what a command prints for e; whileLost says what goes on in
// the meantime.
func (e connEvent) text(whileLost string) string {
	if e.lost {
		return e.msg + " " + whileLost
	}
	return e.msg
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	out := &countingWriter{w: termWriter{stdout}}
	a := &app{stdin: stdin, stdout: out, stderr: stderr}
	root := &cobra.Command{
		Use:           "chromadb-rollback",
		Short:         "Snapshots and verified rollbacks of ChromaDB, on NATS JetStream",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			s, err := contract.NewSubjects(a.prefix)
			if err != nil {
				return usageErr("--prefix: %v", err)
			}
			a.subj = s
			// A deadline already passed makes a command that starts an
			// operation start it and then report only "context deadline
			// exceeded", as if it had failed: refuse it before anything
			// is asked.
			for _, name := range []string{"timeout", "wait-timeout"} {
				if f := cmd.Flags().Lookup(name); f != nil {
					if d, err := time.ParseDuration(f.Value.String()); err == nil && d <= 0 {
						return usageErr("--%s %s: give a positive duration, such as 30s or 6h; nothing was done", name, f.Value.String())
					}
				}
			}
			return nil
		},
	}
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageErr("%v", err) })
	pf := root.PersistentFlags()
	pf.StringVar(&a.natsURL, "nats-url", envOr("NATS_URL", "nats://127.0.0.1:4222"), "NATS server URL (env NATS_URL)")
	// Help shows the default, so never a password in NATS_URL.
	pf.Lookup("nats-url").DefValue = natsconn.Redact(a.natsURL)
	a.conn.RegisterFlags(pf)
	pf.StringVar(&a.prefix, "prefix", envOr("CHROMA_PREFIX", contract.DefaultPrefix), "subject prefix (env CHROMA_PREFIX)")
	pf.BoolVar(&a.json, "json", false, "print JSON instead of text")
	pf.DurationVar(&a.timeout, "timeout", 30*time.Second, "timeout of one API request")
	pf.StringVar(&a.actor, "actor", defaultActor(), "who is asking, recorded in the audit trail")

	root.AddCommand(a.serveCmd(), a.snapshotCmd(), a.rollbackCmd(), a.rollbackStatusCmd(), a.rollbackCancelCmd(), a.healthCmd())
	root.AddCommand(a.statusCmd())
	root.AddCommand(a.cleanupCmd())
	root.AddCommand(a.auditLogCmd(), a.auditCmd())
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	fmt.Fprintln(stderr, "error:", termEscape(err.Error()))
	code := exitCode(err)
	// A service's error reply: with --json it is printed, so scripts read
	// the code, the message and the field at fault, whatever exit code
	// the command chose for it. An error of the CLI's own (a flag, a file
	// it cannot read) is printed as one too, unless the command already
	// printed what it has (a failed verification's report, say): with
	// --json, a failure never leaves stdout empty.
	// A command or flag cobra could not parse stops before --json is set.
	asked := a.json || slices.ContainsFunc(args, func(s string) bool { return s == "--json" || s == "--json=true" })
	var ae *apiError
	switch {
	case !asked:
	case errors.As(err, &ae) && json.Valid(ae.Body):
		_ = a.printJSON(json.RawMessage(ae.Body))
	case out.n == 0:
		_ = a.printJSON(cliErrorBody{Type: contract.TypeError, Error: err.Error(), ExitCode: code})
	}
	return code
}

// cliErrorBody is what --json prints for an error found by the CLI itself,
// where no service replied: the type and message of a service's error
// reply, and the exit code instead of its status code.
type cliErrorBody struct {
	Type     string `json:"type"`
	Error    string `json:"error"`
	ExitCode int    `json:"exit_code"`
}

// countingWriter counts what was written through it.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// exitCode is the exit code of a command that failed with err.
func exitCode(err error) int {
	var ae *apiError
	isAPI := errors.As(err, &ae)
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	// A 422 is a refused archive or a failed verification, whichever
	// command asked; a 400 a request to fix (a collection not in the
	// snapshot, an invalid name): scripts tell them from other failures by
	// the exit code.
	if isAPI {
		switch ae.Code {
		case contract.CodeVerificationFailed:
			return exitVerification
		case contract.CodeBadRequest:
			return exitUsage
		}
	}
	if isCobraUsage(err) {
		return exitUsage
	}
	return exitFailed
}

func isCobraUsage(err error) bool {
	msg := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "accepts ", "requires at least", "required flag"} {
		if strings.Contains(msg, p) {
			return true
		}
	}
	return false
}

func defaultActor() string {
	h, _ := os.Hostname()
	return actorName(os.Getenv("USER"), user.Current, os.Getuid()) + "@" + h
}

// actorName is who runs the CLI: $USER, else (containers, systemd units,
// cron, where it is often unset) the account of the process's uid, else
// the uid itself; "unknown" only where there is no uid (Windows).
func actorName(env string, current func() (*user.User, error), uid int) string {
	if env != "" {
		return env
	}
	if u, err := current(); err == nil && u.Username != "" {
		return u.Username
	}
	if uid >= 0 {
		return "uid" + strconv.Itoa(uid)
	}
	return "unknown"
}

// connect opens a NATS connection for one command.
func (a *app) connect() (*nats.Conn, error) {
	if err := a.conn.Validate(); err != nil {
		return nil, usageErr("%v", err)
	}
	events := make(chan connEvent, 8)
	a.connEvents = events
	say := func(e connEvent) {
		select {
		case events <- e:
		default: // nobody is waiting to print it
		}
	}
	nc, err := a.conn.Connect(a.natsURL, nats.Name("chromadb-rollback-cli"), nats.Timeout(5*time.Second),
		// A command that waits (for an operation, or following the audit
		// trail) outlives a restart of the server (serve restarted, a
		// cluster node replaced): it reconnects for as long as it waits,
		// and says so, rather than giving up after the client's default
		// two minutes and then waiting unanswered until --wait-timeout.
		nats.MaxReconnects(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				say(connEvent{lost: true, msg: fmt.Sprintf("lost the connection to NATS (%v); reconnecting.", err)})
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			say(connEvent{msg: "reconnected to NATS at " + natsconn.Redact(nc.ConnectedUrl())})
		}))
	if err != nil {
		return nil, fmt.Errorf("%w (is `chromadb-rollback serve` running? set --nats-url or NATS_URL)", err)
	}
	return nc, nil
}

// apiError is an error reply of a service.
type apiError struct {
	Code int
	Msg  string
	Body []byte
}

func (e *apiError) Error() string { return e.Msg }

// request sends req to subject and decodes the reply into out, turning
// Nats-Service-Error headers into an *apiError.
//
// A reply sent while the connection to NATS is lost is lost with it, and
// a lost connection is often the service's own end (serve, which embeds
// NATS and the services, killed or restarted): nobody answers any more.
// So once the connection is back it stops waiting, rather than waiting
// silently until timeout (an hour for a plan or a verify), and says that
// what was asked may or may not have been done.
func (a *app) request(ctx context.Context, nc *nats.Conn, subject string, req, out any, timeout time.Duration) error {
	return a.requestConn(ctx, nc, subject, req, out, timeout, a.connEvents)
}

// errNoAnswer is matched (errors.Is) by the error of a request that was
// sent but whose answer never came (interrupted, timed out, or lost with
// the connection): what was asked may still be under way.
var errNoAnswer = errors.New("no answer")

type noAnswerError struct{ msg string }

func (e *noAnswerError) Error() string        { return e.msg }
func (e *noAnswerError) Is(target error) bool { return target == errNoAnswer }

func noAnswer(format string, args ...any) error {
	return &noAnswerError{fmt.Sprintf(format, args...)}
}

// mayHaveBeenDone ends the error of a request whose answer never came.
const mayHaveBeenDone = "what was asked may or may not have been done: check (`chromadb-rollback status`, `chromadb-rollback audit-log --limit 5`) before running the command again"

// requestConn is request; events, when not nil, are the connection's
// events to watch while it waits (nil: the caller watches them).
func (a *app) requestConn(ctx context.Context, nc *nats.Conn, subject string, req, out any, timeout time.Duration, events <-chan connEvent) error {
	data, err := json.Marshal(req)
	if err != nil {
		return err
	}
	if timeout <= 0 {
		timeout = a.timeout
	}
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	reconnects := nc.Stats().Reconnects
	type result struct {
		msg *nats.Msg
		err error
	}
	replied := make(chan result, 1)
	go func() {
		msg, err := nc.RequestMsgWithContext(rctx, &nats.Msg{Subject: subject, Data: data})
		replied <- result{msg, err}
	}()
	var msg *nats.Msg
wait:
	for {
		select {
		case r := <-replied:
			msg, err = r.msg, r.err
			break wait
		case e := <-events:
			fmt.Fprintln(a.stderr, e.text("Waiting for the answer to "+subject+"."))
			if !e.lost && nc.Stats().Reconnects > reconnects {
				cancel()
				if r := <-replied; r.err == nil { // it came after all
					msg = r.msg
					break wait
				}
				return noAnswer("no answer to %s: the connection to NATS was lost while waiting for it, and an answer sent meanwhile is lost (a restarted serve sends none); %s", subject, mayHaveBeenDone)
			}
		}
	}
	if err != nil {
		switch {
		case errors.Is(err, nats.ErrNoResponders):
			return fmt.Errorf("no service answers on %s: is `chromadb-rollback serve` (or the service) running?", subject)
		case errors.Is(ctx.Err(), context.Canceled): // the caller's: interrupted (Ctrl-C)
			return noAnswer("interrupted while waiting for the answer to %s; %s", subject, mayHaveBeenDone)
		case ctx.Err() != nil: // the caller's deadline (--wait-timeout)
			return noAnswer("no answer to %s before the command's deadline; %s", subject, mayHaveBeenDone)
		case errors.Is(err, context.DeadlineExceeded):
			return noAnswer("no answer to %s within %s (--timeout): the service is busy or stuck; %s", subject, timeout, mayHaveBeenDone)
		}
		return fmt.Errorf("request %s: %w", subject, err)
	}
	if code := msg.Header.Get("Nats-Service-Error-Code"); code != "" {
		n, _ := strconv.Atoi(code)
		var body contract.ErrorBody
		text := msg.Header.Get("Nats-Service-Error")
		if json.Unmarshal(msg.Data, &body) == nil && body.Error != "" {
			text = body.Error
		}
		return &apiError{Code: n, Msg: text, Body: msg.Data}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(msg.Data, out); err != nil {
		return fmt.Errorf("decode reply from %s: %w", subject, err)
	}
	return nil
}

// counted is n and noun, in the plural unless n is 1: "1 collection",
// "2 collections".
func counted[N ~int | ~int64](n N, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// printJSON writes v indented.
func (a *app) printJSON(v any) error {
	enc := json.NewEncoder(a.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// oneArg is cobra.ExactArgs(1) with an error that shows what the argument
// is: "accepts 1 arg(s), received 0" did not say an OP_ID was missing.
func oneArg(cmd *cobra.Command, args []string) error {
	if len(args) == 1 {
		return nil
	}
	return usageErr("%s takes one argument, %d given; usage: %s", cmd.CommandPath(), len(args), cmd.UseLine())
}
