package snapshotter

import "io"

// pipe is io.Pipe with a buffer: a Write is copied and returns at once
// while fewer than depth pieces wait, so the archive writer does not stop
// for every block until the put and the verifier have both taken it; each
// works on its own core as far as there is one. As with io.Pipe, a Write
// racing with CloseWrite or CloseRead fails instead of panicking: after a
// failed export the compressor's goroutine may still write a block.
type pipe struct {
	ch     chan []byte
	done   chan struct{} // closed by CloseRead
	closed chan struct{} // closed by CloseWrite
	cur    []byte

	werr error // how the writer ended (nil: io.EOF); set before closed
	rerr error // why the reader stopped; set before done
}

// pipePiece bounds one buffered piece (larger writes are split), and
// pipeDepth is how many pieces the snapshot's pipes buffer: the archive
// writer's blocks are at most 128 KiB, so about 4 MB each.
const (
	pipePiece = 256 << 10
	pipeDepth = 32
)

func newPipe(depth int) *pipe {
	return &pipe{ch: make(chan []byte, depth), done: make(chan struct{}), closed: make(chan struct{})}
}

// Write copies b into the buffer, waiting while it is full. It fails once
// the reader has stopped or the writer has ended.
func (p *pipe) Write(b []byte) (int, error) { return writePipes(b, p) }

// writePipes writes b to every pipe of ps, as io.MultiWriter would, but
// copies each piece once: the pipes' readers share it (nobody writes to a
// piece once it is sent).
func writePipes(b []byte, ps ...*pipe) (int, error) {
	n := 0
	for len(b) > 0 {
		k := min(len(b), pipePiece)
		piece := make([]byte, k)
		copy(piece, b[:k])
		for _, p := range ps {
			if err := p.send(piece); err != nil {
				return n, err
			}
		}
		n += k
		b = b[k:]
	}
	return n, nil
}

// send queues piece, waiting while the buffer is full.
func (p *pipe) send(piece []byte) error {
	select {
	case <-p.done:
		return p.rerr
	case <-p.closed:
		return io.ErrClosedPipe
	default:
	}
	select {
	case p.ch <- piece:
		return nil
	case <-p.done:
		return p.rerr
	case <-p.closed:
		return io.ErrClosedPipe
	}
}

// tee is a writer to several pipes (writePipes).
type tee []*pipe

func (t tee) Write(b []byte) (int, error) { return writePipes(b, t...) }

// CloseWrite ends the stream: the reader gets err after the buffered
// bytes, or io.EOF when err is nil. Call it once, after the last Write.
func (p *pipe) CloseWrite(err error) {
	p.werr = err
	close(p.closed)
}

// Read reads what was written, in order.
func (p *pipe) Read(b []byte) (int, error) {
	for len(p.cur) == 0 {
		select {
		case p.cur = <-p.ch:
		case <-p.done:
			return 0, p.rerr
		case <-p.closed:
			// Everything written before CloseWrite is buffered: read it
			// first.
			select {
			case p.cur = <-p.ch:
				continue
			default:
			}
			if p.werr != nil {
				return 0, p.werr
			}
			return 0, io.EOF
		}
	}
	n := copy(b, p.cur)
	p.cur = p.cur[n:]
	return n, nil
}

// CloseRead stops the reader: pending and later Writes fail with err
// (io.ErrClosedPipe when nil). Call it at most once.
func (p *pipe) CloseRead(err error) {
	if err == nil {
		err = io.ErrClosedPipe
	}
	p.rerr = err
	close(p.done)
}
