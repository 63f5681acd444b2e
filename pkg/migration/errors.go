package migration

import "errors"

// Sentinel errors, matched with errors.Is.
var (
	// ErrAborted is returned by WaitWhilePaused once the job was told to
	// abort; the error's text carries the reason.
	ErrAborted = errors.New("migration aborted")
	// ErrNotStarted is returned by WaitForSnapshot before Start succeeded.
	ErrNotStarted = errors.New("migration not started")
	// ErrAlreadyStarted is returned by a second Start once one succeeded.
	ErrAlreadyStarted = errors.New("migration already started")
	// ErrSnapshotFailed is returned by WaitForSnapshot when the watchdog
	// could not take the pre-migration snapshot.
	ErrSnapshotFailed = errors.New("pre-migration snapshot failed")
	// ErrClosed is returned by calls on a closed Job.
	ErrClosed = errors.New("migration job closed")
)
