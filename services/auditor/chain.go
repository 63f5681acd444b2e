package auditor

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
)

// maxProblems bounds the problems a report lists; counting goes on.
const maxProblems = 100

// entryRef is what verify keeps of an entry to compare it with the stream.
type entryRef struct {
	line   int
	seq    uint64
	digest [sha256.Size]byte // of the entry's content (NewEntry's fields)
}

// checker walks the trail line by line and checks each entry against
// itself and against the line before it.
type checker struct {
	lines    int
	firstSeq uint64
	lastSeq  uint64
	lastHash string // stored hash of the last entry that decoded
	prevHash string // "" after a line that did not decode: nothing to chain to
	prevSeq  uint64
	ids      map[string]entryRef
	bySeq    map[uint64]entryRef // only when keepRefs
	keepRefs bool
	problems []contract.AuditProblem
	total    int // problems found, listed or not
}

func newChecker(forLoad bool) *checker {
	c := &checker{lastHash: contract.AuditGenesisHash, prevHash: contract.AuditGenesisHash, ids: map[string]entryRef{}}
	if !forLoad {
		c.keepRefs = true
		c.bySeq = map[uint64]entryRef{}
	}
	return c
}

func (c *checker) problem(p contract.AuditProblem) {
	c.total++
	if len(c.problems) < maxProblems {
		c.problems = append(c.problems, p)
	}
}

// add checks the next line (without its newline).
func (c *checker) add(line []byte) {
	c.lines++
	n := c.lines
	e, decoded, kind, detail := parseLine(line)
	if !decoded {
		c.problem(contract.AuditProblem{Line: n, Kind: kind, Detail: detail})
		c.prevHash = ""
		return
	}
	if kind != "" {
		c.problem(contract.AuditProblem{Line: n, Seq: e.Seq, Kind: kind, Detail: detail})
	}
	if c.prevHash != "" && e.Prev != c.prevHash {
		what := "the previous line's hash"
		if n == 1 {
			what = "the genesis hash"
		}
		c.problem(contract.AuditProblem{Line: n, Seq: e.Seq, Kind: contract.AuditChainBroken,
			Detail: fmt.Sprintf("prev is %s but %s is %s: an entry was deleted, inserted or moved before this line", short(e.Prev), what, short(c.prevHash))})
	}
	if n > 1 && e.Seq <= c.prevSeq {
		c.problem(contract.AuditProblem{Line: n, Seq: e.Seq, Kind: contract.AuditOutOfOrder,
			Detail: fmt.Sprintf("seq %d comes after seq %d: lines were reordered or repeated", e.Seq, c.prevSeq)})
	}
	ref := entryRef{line: n, seq: e.Seq}
	if id := eventID(e.Event); id != "" {
		if first, dup := c.ids[id]; dup {
			c.problem(contract.AuditProblem{Line: n, Seq: e.Seq, Kind: contract.AuditDuplicate,
				Detail: fmt.Sprintf("event id %q is already at line %d (seq %d); the auditor writes each event once", id, first.line, first.seq)})
		} else {
			c.ids[id] = ref
		}
	}
	if c.keepRefs {
		ref.digest = contentDigest(&e)
		if _, dup := c.bySeq[e.Seq]; !dup {
			c.bySeq[e.Seq] = ref
		}
	}
	if c.firstSeq == 0 {
		c.firstSeq = e.Seq
	}
	c.lastSeq = max(c.lastSeq, e.Seq)
	c.prevSeq = e.Seq
	c.prevHash = e.Hash
	c.lastHash = e.Hash
}

// contentDigest hashes what the stream holds of an entry (sequence, time
// stored, subject, payload), not its chain.
func contentDigest(e *contract.AuditTrailEntry) [sha256.Size]byte {
	h := sha256.New()
	var b [8]byte
	for _, part := range [][]byte{[]byte(e.Subject), e.Event, e.Raw} {
		binary.BigEndian.PutUint64(b[:], uint64(len(part)))
		h.Write(b[:])
		h.Write(part)
	}
	binary.BigEndian.PutUint64(b[:], e.Seq)
	h.Write(b[:])
	binary.BigEndian.PutUint64(b[:], uint64(e.Stored.UnixNano()))
	h.Write(b[:])
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum
}
