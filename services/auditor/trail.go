package auditor

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/filelock"
)

// maxLineBytes bounds one trail line: a NATS message (1 MiB by default, at
// most 64 MiB) base64-encoded with its envelope.
const maxLineBytes = 96 << 20

// Head is how far the trail is written and synced.
type Head struct {
	Lines    int    // complete lines
	Size     int64  // bytes, up to and including the last newline
	FirstSeq uint64 // stream sequence of the first entry
	LastSeq  uint64 // of the last entry
	LastHash string // of the last entry; AuditGenesisHash when empty
}

// Trail is the append-only JSONL file. One goroutine appends; readers see
// the prefix up to Head().Size, which never changes once written.
type Trail struct {
	path string
	log  *slog.Logger
	f    *os.File
	lock *filelock.Lock // held while open: the trail has one writer

	wmu sync.Mutex // held by an append, and by a reader that needs the whole file still
	// Under wmu: the SHA-256 of the bytes written (Head().Size of them)
	// and the file's modification time when they were last found intact.
	// A time that moved without an append is an edit in place, unless the
	// bytes still hash the same.
	sum   hash.Hash
	mtime time.Time

	mu   sync.Mutex
	head Head
	ids  map[string]uint64 // event id -> sequence of its entry
}

// OpenTrail opens (or creates) the trail at path and reads it to find its
// head and the event ids it holds. A last line without a newline is a
// write that a crash cut short: it was never acknowledged, so it is cut
// off and its message will be delivered again. Problems in complete lines
// are logged, never repaired: verify reports them.
func OpenTrail(path string, log *slog.Logger) (*Trail, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	_, statErr := os.Stat(path)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open trail: %w", err)
	}
	if errors.Is(statErr, os.ErrNotExist) {
		// The new file's directory entry must survive a crash too.
		if err := syncDir(filepath.Dir(path)); err != nil {
			f.Close()
			return nil, err
		}
	}
	// One writer: a second auditor appending to the same file would
	// interleave its lines with this one's.
	lock, err := filelock.Acquire(path, 0)
	if errors.Is(err, filelock.ErrHeld) {
		f.Close()
		return nil, fmt.Errorf("audit trail %s is written by another auditor: every auditor needs its own --data-dir (and its own consumer)", path)
	}
	if errors.Is(err, filelock.ErrUnsupported) {
		log.Warn("the trail's file system takes no locks: nothing stops a second auditor on it", "path", path, "err", err)
	} else if err != nil {
		f.Close()
		return nil, err
	}
	t := &Trail{path: path, log: log, f: f, lock: lock}
	if err := t.load(); err != nil {
		t.Close()
		return nil, err
	}
	return t, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync trail dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync trail dir: %w", err)
	}
	return nil
}

func (t *Trail) load() error {
	if _, err := t.f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("read trail: %w", err)
	}
	c := newChecker(true)
	t.sum = sha256.New()
	size, torn, err := scanLines(t.f, -1, func(line []byte) {
		t.sum.Write(line)
		t.sum.Write([]byte{'\n'})
		c.add(line)
	})
	if err != nil {
		return fmt.Errorf("read trail %s: %w", t.path, err)
	}
	if torn > 0 {
		if err := t.f.Truncate(size); err != nil {
			return fmt.Errorf("cut the torn last line of %s: %w", t.path, err)
		}
		if err := t.f.Sync(); err != nil {
			return fmt.Errorf("sync %s: %w", t.path, err)
		}
		t.log.Warn("trail: cut a torn last line, written by a process that died before acknowledging it",
			"path", t.path, "line", c.lines+1, "bytes", torn)
	}
	for i, p := range c.problems {
		if i == 10 {
			t.log.Error("trail: more problems; run `chromadb-rollback audit verify`", "problems", len(c.problems))
			break
		}
		t.log.Error("trail: entry fails verification", "path", t.path, "line", p.Line, "seq", p.Seq, "kind", p.Kind, "detail", p.Detail)
	}
	t.head = Head{Lines: c.lines, Size: size, FirstSeq: c.firstSeq, LastSeq: c.lastSeq, LastHash: c.lastHash}
	if err := t.stamp(); err != nil {
		return err
	}
	t.ids = make(map[string]uint64, len(c.ids))
	for id, r := range c.ids {
		t.ids[id] = r.seq
	}
	return nil
}

// scanLines calls fn for each complete line of r (without its newline),
// reading at most limit bytes (all when limit < 0). It returns the bytes
// up to the last newline and the length of a last line without one.
func scanLines(r io.Reader, limit int64, fn func(line []byte)) (size int64, torn int, err error) {
	if limit >= 0 {
		r = io.LimitReader(r, limit)
	}
	br := bufio.NewReaderSize(r, 1<<20)
	for {
		line, err := readLine(br)
		if len(line) > 0 && line[len(line)-1] == '\n' {
			size += int64(len(line))
			fn(line[:len(line)-1])
		} else if len(line) > 0 {
			torn = len(line)
		}
		if errors.Is(err, io.EOF) {
			return size, torn, nil
		}
		if err != nil {
			return size, torn, err
		}
	}
}

// readLine reads through the next newline, refusing lines over maxLineBytes.
func readLine(br *bufio.Reader) ([]byte, error) {
	var long []byte
	for {
		frag, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			long = append(long, frag...)
			if len(long) > maxLineBytes {
				return nil, fmt.Errorf("a line longer than %d bytes", maxLineBytes)
			}
			continue
		}
		if long != nil {
			return append(long, frag...), err
		}
		return frag, err
	}
}

// Path is the trail file's path.
func (t *Trail) Path() string { return t.path }

// Head returns how far the trail is written.
func (t *Trail) Head() Head {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.head
}

// Seen returns the sequence of the entry holding event id, if any.
func (t *Trail) Seen(id string) (uint64, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	seq, ok := t.ids[id]
	return seq, ok
}

// Append chains entries after the head, writes them in one write, syncs
// the file and only then moves the head. On failure the file is cut back
// to the old head, so a later append starts on a clean line.
func (t *Trail) Append(entries []contract.AuditTrailEntry) error {
	if len(entries) == 0 {
		return nil
	}
	t.wmu.Lock()
	defer t.wmu.Unlock()
	t.mu.Lock()
	head := t.head
	t.mu.Unlock()
	prev := head.LastHash
	var buf bytes.Buffer
	for i := range entries {
		e := &entries[i]
		if e.Seq <= head.LastSeq {
			return fmt.Errorf("append seq %d after seq %d: the trail is in stream order", e.Seq, head.LastSeq)
		}
		line, err := Chain(e, prev)
		if err != nil {
			return err
		}
		buf.Write(line)
		prev = e.Hash
		head.LastSeq = e.Seq
	}
	if err := t.unchanged(head.Size); err != nil {
		return err
	}
	if _, err := t.f.Write(buf.Bytes()); err != nil {
		return t.undo(head.Size, fmt.Errorf("write trail: %w", err))
	}
	if err := t.f.Sync(); err != nil {
		return t.undo(head.Size, fmt.Errorf("sync trail: %w", err))
	}
	t.sum.Write(buf.Bytes())
	if err := t.stamp(); err != nil {
		t.mtime = time.Time{} // checked against the bytes next time
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.head.Lines == 0 {
		t.head.FirstSeq = entries[0].Seq
	}
	t.head.Lines += len(entries)
	t.head.Size += int64(buf.Len())
	t.head.LastSeq = head.LastSeq
	t.head.LastHash = prev
	for i := range entries {
		if id := eventID(entries[i].Event); id != "" {
			t.ids[id] = entries[i].Seq
		}
	}
	return nil
}

// undo cuts the file back to size after a failed append.
func (t *Trail) undo(size int64, err error) error {
	if terr := t.f.Truncate(size); terr != nil {
		return fmt.Errorf("%w; and cutting it back to %d bytes failed: %v", err, size, terr)
	}
	return err
}

// ErrChanged says the trail file is not what the auditor wrote.
var ErrChanged = errors.New("trail changed under the auditor")

// unchanged checks that the file at the path is the one open and ends
// where the auditor left it: nobody else writes the trail. The auditor
// does not append to a file it did not write, so a tampered trail stays
// as it was found for verify to report.
func (t *Trail) unchanged(size int64) error {
	open, err := t.f.Stat()
	if err != nil {
		return fmt.Errorf("stat trail: %w", err)
	}
	cur, err := os.Stat(t.path)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrChanged, t.path, err)
	}
	if !os.SameFile(open, cur) {
		return fmt.Errorf("%w: %s was replaced by another file", ErrChanged, t.path)
	}
	if open.Size() != size {
		return fmt.Errorf("%w: %s is %d bytes, the auditor wrote %d", ErrChanged, t.path, open.Size(), size)
	}
	if open.ModTime().Equal(t.mtime) {
		return nil
	}
	// Modified since the auditor last wrote it, at the same size: an
	// edit in place, or the file put back as it was.
	if err := t.sameBytes(size); err != nil {
		return err
	}
	t.mtime = open.ModTime()
	return nil
}

// stamp notes the file's modification time as that of the bytes written.
func (t *Trail) stamp() error {
	st, err := t.f.Stat()
	if err != nil {
		return fmt.Errorf("stat trail: %w", err)
	}
	t.mtime = st.ModTime()
	return nil
}

// sameBytes reports ErrChanged unless the file's first size bytes are
// the ones the auditor wrote.
func (t *Trail) sameBytes(size int64) error {
	f, err := os.Open(t.path)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrChanged, t.path, err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, io.LimitReader(f, size)); err != nil {
		return fmt.Errorf("read trail: %w", err)
	}
	if !bytes.Equal(h.Sum(nil), t.sum.Sum(nil)) {
		return fmt.Errorf("%w: %s was edited in place: its bytes are not the ones the auditor wrote", ErrChanged, t.path)
	}
	return nil
}

// Unchanged reports ErrChanged when the file at the trail's path is not
// the one the auditor writes, or does not end where it stopped writing.
func (t *Trail) Unchanged() error {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	return t.unchanged(t.Head().Size)
}

// readStill calls fn with the file at the trail's path, opened anew, and
// the head, while no append runs: the file holds exactly the head's bytes
// unless someone else changed it. replaced says the path no longer names
// the file the auditor appends to.
func (t *Trail) readStill(fn func(f *os.File, head Head, replaced bool)) error {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	f, err := os.Open(t.path)
	if err != nil {
		return err
	}
	defer f.Close()
	open, err := t.f.Stat()
	if err != nil {
		return err
	}
	cur, err := f.Stat()
	if err != nil {
		return err
	}
	fn(f, t.Head(), !os.SameFile(open, cur))
	return nil
}

// Close closes the file and lets another auditor open it.
func (t *Trail) Close() error {
	err := t.f.Close()
	if lerr := t.lock.Release(); err == nil {
		err = lerr
	}
	return err
}
