package main

import (
	"encoding/json"
	"io"
	"os"
	"strings"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/nats-io/nats.go"
	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// envProgress overrides where progress bars are drawn: "always" draws them
// on stderr even when it is not a terminal (a log that should show how far
// a long export got), "never" draws none. By default they are drawn on a
// terminal only.
const envProgress = "CHROMA_ROLLBACK_PROGRESS"

// barOut is where progress bars go: stderr on a terminal (or always, or
// never, as envProgress says), never with --json.
func (a *app) barOut() io.Writer {
	if a.json {
		return nil
	}
	switch strings.ToLower(os.Getenv(envProgress)) {
	case "always":
		return a.stderr
	case "never":
		return nil
	}
	if f, ok := a.stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		return a.stderr
	}
	return nil
}

// opBar draws the progress an operation publishes on its progress subject
// (records done of the total, phase, rate and time left) until stop is
// called; stop first draws what had arrived by then (a request's reply
// comes after the progress published before it). Nothing is drawn where
// barOut says no.
func (a *app) opBar(nc *nats.Conn, opID string) (stop func()) {
	out := a.barOut()
	if out == nil {
		return func() {}
	}
	bar := progressbar.NewOptions64(-1, progressbar.OptionSetWriter(out), progressbar.OptionSetDescription("starting"),
		progressbar.OptionShowCount(), progressbar.OptionSetPredictTime(false),
		progressbar.OptionThrottle(200*time.Millisecond), progressbar.OptionClearOnFinish())
	show := func(m *nats.Msg) {
		var p contract.Progress
		if json.Unmarshal(m.Data, &p) != nil {
			return
		}
		if p.TotalRecords > 0 {
			bar.ChangeMax64(p.TotalRecords)
		}
		bar.Describe(barLabel(p))
		_ = bar.Set64(p.DoneRecords)
	}
	ch := make(chan *nats.Msg, 256)
	sub, err := nc.ChanSubscribe(a.subj.Progress(opID), ch)
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case m := <-ch:
				show(m)
			case <-quit:
				for {
					select {
					case m := <-ch:
						show(m)
					default:
						return
					}
				}
			}
		}
	}()
	return func() {
		if err == nil {
			_ = sub.Unsubscribe()
		}
		close(quit)
		<-done
		_ = bar.Finish()
	}
}

// bytesBar is a progress bar of a copy of total bytes (an upload, an
// export): write what was copied to it. It is io.Discard where barOut
// says no bar; finish clears it.
func (a *app) bytesBar(what string, total int64) (w io.Writer, finish func()) {
	out := a.barOut()
	if out == nil {
		return io.Discard, func() {}
	}
	bar := progressbar.NewOptions64(total, progressbar.OptionSetWriter(out), progressbar.OptionSetDescription(what),
		progressbar.OptionShowBytes(true), progressbar.OptionSetPredictTime(true), progressbar.OptionSetRenderBlankState(true),
		progressbar.OptionThrottle(200*time.Millisecond), progressbar.OptionClearOnFinish())
	return bar, func() { _ = bar.Finish() }
}
