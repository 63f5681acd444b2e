package snapshotter

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// TestPipe: what is written is read whole and in order, whatever the sizes
// of writes and reads; a Write's bytes are copied; the writer's error comes
// after the buffered bytes; a stopped reader fails a writer waiting on a
// full buffer; a Write racing with the end of the stream fails without a
// panic or a data race (the compressor's goroutine after a failed export).
func TestPipe(t *testing.T) {
	t.Run("order and copies", func(t *testing.T) {
		rng := rand.New(rand.NewPCG(7, 9))
		data := make([]byte, 5*pipePiece+12345)
		for i := range data {
			data[i] = byte(rng.Uint32())
		}
		p := newPipe(3)
		go func() {
			buf := make([]byte, 2*pipePiece+1)
			for rest := data; len(rest) > 0; {
				n := min(len(rest), 1+rng.IntN(len(buf)))
				copy(buf, rest[:n])
				if _, err := p.Write(buf[:n]); err != nil {
					p.CloseWrite(err)
					return
				}
				clear(buf) // the pipe kept its own copy
				rest = rest[n:]
			}
			p.CloseWrite(nil)
		}()
		var got bytes.Buffer
		buf := make([]byte, 1000)
		for {
			n, err := p.Read(buf)
			got.Write(buf[:n])
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("read: %v", err)
			}
		}
		if !bytes.Equal(got.Bytes(), data) {
			t.Fatalf("read %d bytes that differ from the %d written", got.Len(), len(data))
		}
	})

	t.Run("the writer's error follows its bytes", func(t *testing.T) {
		p := newPipe(4)
		boom := errors.New("export failed")
		if _, err := p.Write([]byte("abc")); err != nil {
			t.Fatal(err)
		}
		p.CloseWrite(boom)
		got, err := io.ReadAll(p)
		if string(got) != "abc" || !errors.Is(err, boom) {
			t.Fatalf("read %q, %v; want \"abc\" then %v", got, err, boom)
		}
	})

	t.Run("a stopped reader fails the writer", func(t *testing.T) {
		p := newPipe(1)
		stopped := errors.New("put failed")
		done := make(chan error, 1)
		var n int
		go func() {
			var err error
			n, err = p.Write(make([]byte, 3*pipePiece))
			done <- err
		}()
		select {
		case err := <-done:
			t.Fatalf("a write of three pieces into a buffer of one returned (%v) with nothing read", err)
		case <-time.After(50 * time.Millisecond):
		}
		p.CloseRead(stopped)
		select {
		case err := <-done:
			if !errors.Is(err, stopped) || n != pipePiece {
				t.Fatalf("write returned %d, %v; want %d (the piece buffered), %v", n, err, pipePiece, stopped)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the writer stayed blocked after the reader stopped")
		}
		if _, err := p.Write([]byte("x")); !errors.Is(err, stopped) {
			t.Fatalf("write after the reader stopped: %v, want %v", err, stopped)
		}
	})

	t.Run("a write after the end fails", func(t *testing.T) {
		p := newPipe(2)
		var wg sync.WaitGroup
		wg.Go(func() {
			for range 100 {
				if _, err := p.Write([]byte("late block")); err != nil {
					if !errors.Is(err, io.ErrClosedPipe) {
						t.Errorf("write racing with the end: %v, want io.ErrClosedPipe", err)
					}
					return
				}
			}
		})
		p.CloseWrite(errors.New("export failed"))
		wg.Wait()
		if _, err := p.Write([]byte("x")); !errors.Is(err, io.ErrClosedPipe) {
			t.Fatalf("write after CloseWrite: %v, want io.ErrClosedPipe", err)
		}
	})

	t.Run("a tee gives both readers every byte, and stops with either", func(t *testing.T) {
		data := bytes.Repeat([]byte("0123456789"), pipePiece/4) // 2.5 pieces
		a, b := newPipe(8), newPipe(8)
		if n, err := (tee{a, b}).Write(data); n != len(data) || err != nil {
			t.Fatalf("write: %d, %v", n, err)
		}
		a.CloseWrite(nil)
		b.CloseWrite(nil)
		for _, p := range []*pipe{a, b} {
			if got, err := io.ReadAll(p); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("read %d bytes (%v), want the %d written", len(got), err, len(data))
			}
		}
		c, d := newPipe(8), newPipe(8)
		stopped := errors.New("verifier failed")
		d.CloseRead(stopped)
		if _, err := (tee{c, d}).Write(data); !errors.Is(err, stopped) {
			t.Fatalf("write with one reader stopped: %v, want %v", err, stopped)
		}
	})
}
