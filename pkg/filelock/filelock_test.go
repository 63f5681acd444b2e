package filelock

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestLockExcludesOtherProcesses: a second process cannot take a held lock,
// and can once it is released or its holder exits.
func TestLockExcludesOtherProcesses(t *testing.T) {
	if os.Getenv("FILELOCK_CHILD") != "" {
		// The child: try the lock once and report.
		l, err := Acquire(os.Getenv("FILELOCK_CHILD"), 0)
		if err != nil {
			os.Stdout.WriteString("refused: " + err.Error())
			os.Exit(0)
		}
		l.Release()
		os.Stdout.WriteString("taken")
		os.Exit(0)
	}
	path := filepath.Join(t.TempDir(), "LOCK")
	child := func() string {
		cmd := exec.Command(os.Args[0], "-test.run", "^TestLockExcludesOtherProcesses$")
		cmd.Env = append(os.Environ(), "FILELOCK_CHILD="+path)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("child: %v", err)
		}
		return string(out)
	}
	l, err := Acquire(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := child(); !strings.HasPrefix(got, "refused: ") || !strings.Contains(got, path) || !strings.Contains(got, ErrHeld.Error()) {
		t.Errorf("another process while held: %q; want refused, naming %s", got, path)
	}
	// In this process too, another descriptor is refused.
	if _, err := Acquire(path, 50*time.Millisecond); !errors.Is(err, ErrHeld) {
		t.Errorf("second Acquire in this process: %v, want ErrHeld", err)
	}
	// A holder letting go while Acquire waits.
	go func() {
		time.Sleep(100 * time.Millisecond)
		l.Release()
	}()
	l2, err := Acquire(path, 5*time.Second)
	if err != nil {
		t.Fatalf("Acquire after the holder let go: %v", err)
	}
	if got := child(); !strings.HasPrefix(got, "refused: ") {
		t.Errorf("another process while held again: %q", got)
	}
	if err := l2.Release(); err != nil || l2.Release() != nil {
		t.Errorf("Release: %v", err)
	}
	if got := child(); got != "taken" {
		t.Errorf("another process after Release: %q, want taken", got)
	}
}

// TestUnsupported: the errors of a file system without locks are told
// apart from a held lock and from other failures.
func TestUnsupported(t *testing.T) {
	for _, err := range []error{syscall.ENOTSUP, syscall.EOPNOTSUPP, syscall.ENOLCK, syscall.ENOSYS} {
		if !unsupported(err) {
			t.Errorf("%v: not taken for a file system without locks", err)
		}
	}
	for _, err := range []error{syscall.EWOULDBLOCK, syscall.EBADF, syscall.EINTR, nil} {
		if unsupported(err) {
			t.Errorf("%v: taken for a file system without locks", err)
		}
	}
}
