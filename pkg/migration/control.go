package migration

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/nats-io/nats.go"
)

// OnControl registers handler to be called with every valid control
// command, after Paused and Aborted reflect it. Handlers run one at a time,
// in the order the commands arrived, on the subscription's goroutine: they
// must return quickly and must not call WaitWhilePaused.
func (j *Job) OnControl(handler func(contract.Control)) {
	if handler == nil {
		return
	}
	j.mu.Lock()
	j.handlers = append(j.handlers, handler)
	j.mu.Unlock()
}

// Paused reports whether the latest pause has not been followed by a resume.
func (j *Job) Paused() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.paused
}

// Aborted is closed when the job is told to abort. An abort is final: a
// later resume does not undo it.
func (j *Job) Aborted() <-chan struct{} { return j.aborted }

// AbortReason is the reason of the abort, "" before one.
func (j *Job) AbortReason() string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.abortReason
}

// LastControl is the latest valid control command received, if any.
func (j *Job) LastControl() (contract.Control, bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.last == nil {
		return contract.Control{}, false
	}
	return *j.last, true
}

// WaitWhilePaused returns nil at once when the job is not paused, and
// otherwise blocks until it is resumed. It returns an error wrapping
// ErrAborted (with the reason) once the job was told to abort, and ctx's
// error when ctx ends first. Call it between units of work.
func (j *Job) WaitWhilePaused(ctx context.Context) error {
	for {
		j.mu.Lock()
		abortReason, paused, reason, changed := j.abortReason, j.paused, j.pauseReason, j.changed
		j.mu.Unlock()
		if abortReason != "" {
			return fmt.Errorf("%w: %s", ErrAborted, abortReason)
		}
		if !paused {
			return nil
		}
		j.log.Debug("migration paused; waiting", attrReason, reason)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		}
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// onControl applies one control command.
func (j *Job) onControl(m *nats.Msg) {
	var c contract.Control
	if err := json.Unmarshal(m.Data, &c); err != nil {
		j.log.Warn("control message is not JSON; ignored", attrErr, err)
		return
	}
	switch {
	case c.Type != "" && c.Type != contract.TypeControl:
		j.log.Warn("control message of another type; ignored", "type", c.Type)
		return
	case c.Job != "" && c.Job != j.job:
		j.log.Warn("control message for another job; ignored", "for", c.Job)
		return
	}
	j.mu.Lock()
	switch c.Command {
	case contract.ControlPause:
		j.paused, j.pauseReason = true, c.Reason
	case contract.ControlResume:
		j.paused, j.pauseReason = false, ""
	case contract.ControlAbort:
		if !isClosed(j.aborted) {
			j.abortReason = c.Reason
			if j.abortReason == "" {
				j.abortReason = "no reason given"
			}
			close(j.aborted)
		}
	default:
		j.mu.Unlock()
		j.log.Warn("unknown control command; ignored", attrCommand, c.Command)
		return
	}
	j.last = &c
	close(j.changed)
	j.changed = make(chan struct{})
	handlers := append([]func(contract.Control){}, j.handlers...)
	j.mu.Unlock()
	j.log.Info("control command received", attrCommand, c.Command, attrReason, c.Reason)
	for _, h := range handlers {
		h(c)
	}
}
