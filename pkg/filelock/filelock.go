// Package filelock takes exclusive advisory locks (flock) on files, so that
// two processes never write one JetStream store or one audit trail: neither
// nats-server nor a plain append notices the other writer until the data is
// corrupt.
package filelock

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
)

// ErrHeld says another holder has the lock.
var ErrHeld = errors.New("locked by another process")

// ErrUnsupported says the file system takes no such locks (a few network
// and FUSE file systems): the caller decides whether to go on without one.
var ErrUnsupported = errors.New("file locks are not supported here")

// Lock is a held lock; Release lets it go. The kernel releases it when the
// process exits, however it exits.
type Lock struct{ f *os.File }

// Acquire locks path, creating the file when missing. A holder in this
// process that is letting go (a server shutting down just before a restart)
// is waited for up to wait; another holder makes it fail with ErrHeld.
func Acquire(path string, wait time.Duration) (*Lock, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	deadline := time.Now().Add(wait)
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return &Lock{f: f}, nil
		}
		if unsupported(err) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w (%w)", path, ErrUnsupported, err)
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("%s is %w", path, ErrHeld)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Release lets the lock go. It may be called more than once.
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close() // closing the last descriptor releases the flock
	l.f = nil
	return err
}

// unsupported says whether flock's err means the file system takes no locks.
func unsupported(err error) bool {
	for _, e := range []error{syscall.ENOTSUP, syscall.EOPNOTSUPP, syscall.ENOLCK, syscall.ENOSYS} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
