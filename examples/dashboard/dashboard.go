package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/natsconn"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// batchSize is how many messages one pull asks for.
const batchSize = 256

// dashboard reads the audit stream as cfg says and prints the figures.
func dashboard(ctx context.Context, cfg *config, out io.Writer) error {
	nc, err := cfg.NATS.Connect(cfg.NATSURL, nats.Name("chromadb-rollback-dashboard"))
	if err != nil {
		return fmt.Errorf("connect to %s: %w", natsconn.Redact(cfg.NATSURL), err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	stream, err := js.Stream(ctx, cfg.Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("no stream %s on %s: has chromadb-rollback run there?", cfg.Stream, natsconn.Redact(cfg.NATSURL))
	}
	if err != nil {
		return fmt.Errorf("stream %s: %w", cfg.Stream, err)
	}
	var stats *Stats
	if cfg.Replay {
		stats, err = replay(ctx, stream, cfg, out)
	} else {
		stats, err = resume(ctx, stream, cfg, out)
	}
	if err != nil {
		return err
	}
	return show(stats, cfg, out)
}

func show(s *Stats, cfg *config, out io.Writer) error {
	if cfg.JSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(s)
	}
	return s.Print(out)
}

// ticker prints the figures every interval while following.
type ticker struct {
	cfg  *config
	out  io.Writer
	next time.Time
}

func (t *ticker) maybe(s *Stats) error {
	if !t.cfg.Follow || time.Now().Before(t.next) {
		return nil
	}
	t.next = time.Now().Add(t.cfg.Interval)
	return show(s, t.cfg, t.out)
}

// replay reads the stream from its first message with an ordered consumer:
// no state on the server or on disk, so it is the way to rebuild figures
// from scratch. Without --follow it stops at the last message stored when
// it started.
func replay(ctx context.Context, stream jetstream.Stream, cfg *config, out io.Writer) (*Stats, error) {
	info, err := stream.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("stream info: %w", err)
	}
	end := info.State.LastSeq
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy})
	if err != nil {
		return nil, fmt.Errorf("ordered consumer: %w", err)
	}
	s := NewStats()
	t := &ticker{cfg: cfg, out: out, next: time.Now().Add(cfg.Interval)}
	for cfg.Follow || s.LastSeq < end {
		if err := ctx.Err(); err != nil {
			return s, nil // interrupted while following: print what we have
		}
		batch, err := cons.Fetch(batchSize, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return nil, fmt.Errorf("fetch: %w", err)
		}
		for m := range batch.Messages() {
			md, err := m.Metadata()
			if err != nil {
				return nil, err
			}
			s.Add(md.Sequence.Stream, m.Data())
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && ctx.Err() == nil {
			return nil, fmt.Errorf("fetch: %w", err)
		}
		if err := t.maybe(s); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// resume reads what the durable consumer has not yet acknowledged, adds it
// to the figures in the state file, writes the file, then acknowledges: a
// crash in between redelivers messages that Add recognises by their
// sequence, so each event is counted once. Without --follow it stops once
// nothing is pending.
func resume(ctx context.Context, stream jetstream.Stream, cfg *config, out io.Writer) (*Stats, error) {
	s, err := loadState(cfg.State)
	if err != nil {
		return nil, err
	}
	cons, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       cfg.Durable,
		Description:   "chromadb-rollback dashboard example: figures kept in " + cfg.State,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		MaxAckPending: 4 * batchSize,
	})
	if err != nil {
		return nil, fmt.Errorf("durable consumer %s: %w", cfg.Durable, err)
	}
	t := &ticker{cfg: cfg, out: out, next: time.Now().Add(cfg.Interval)}
	for {
		if ctx.Err() != nil {
			return s, nil
		}
		var batch jetstream.MessageBatch
		if cfg.Follow {
			batch, err = cons.Fetch(batchSize, jetstream.FetchMaxWait(time.Second))
		} else {
			batch, err = cons.FetchNoWait(batchSize)
		}
		if err != nil {
			return nil, fmt.Errorf("fetch: %w", err)
		}
		var msgs []jetstream.Msg
		pending := uint64(0)
		for m := range batch.Messages() {
			md, err := m.Metadata()
			if err != nil {
				return nil, err
			}
			s.Add(md.Sequence.Stream, m.Data())
			msgs = append(msgs, m)
			pending = md.NumPending
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && ctx.Err() == nil {
			return nil, fmt.Errorf("fetch: %w", err)
		}
		if len(msgs) > 0 {
			if err := saveState(cfg.State, s); err != nil {
				return nil, err
			}
			for _, m := range msgs[:len(msgs)-1] {
				_ = m.Ack() // a lost ack redelivers a message Add skips
			}
			if err := msgs[len(msgs)-1].DoubleAck(ctx); err != nil && ctx.Err() == nil {
				return nil, fmt.Errorf("ack: %w", err)
			}
		}
		if err := t.maybe(s); err != nil {
			return nil, err
		}
		if !cfg.Follow && (len(msgs) == 0 || pending == 0) {
			return s, nil
		}
	}
}

// loadState reads the figures kept by an earlier run; none is a fresh start.
func loadState(path string) (*Stats, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return NewStats(), nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state: %w", err)
	}
	s := NewStats()
	if err := json.Unmarshal(data, s); err != nil {
		return nil, fmt.Errorf("state file %s: %w (remove it and the durable consumer to start over)", path, err)
	}
	for _, m := range []map[string]*DayCount{s.Rollbacks, s.Snapshots} {
		for k, v := range m {
			if v == nil {
				delete(m, k)
			}
		}
	}
	return s, nil
}

// saveState writes the figures through a temporary file, so a crash leaves
// the old state or the new one.
func saveState(path string, s *Stats) error {
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("write state: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	return nil
}
