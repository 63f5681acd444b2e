package restorer

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/bus"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
)

// Stages of a collection in a checkpoint.
const (
	stageWriting = "writing" // records are being written (to staging, or in place)
	stageStaged  = "staged"  // staging holds every record, verified; not swapped yet
	stageSwapped = "swapped" // staging has the target's name; the old one may remain
	stageDone    = "done"
)

// checkpoint is how far a rollback got, kept under contract.CheckpointKey so
// a redelivered command resumes where its predecessor stopped.
type checkpoint struct {
	OpID string `json:"op_id"`
	// Plan is fixed by the first attempt, against the state it found.
	Plan *contract.RollbackPlan `json:"plan"`
	// PausedListed says the running migrations were listed; Paused are the
	// jobs told to pause, to be told to resume at the end.
	PausedListed bool     `json:"paused_listed,omitempty"`
	Paused       []string `json:"paused,omitempty"`
	// SafetyOpID and SafetySnapshotID name the safety snapshot once asked for.
	SafetyOpID       string `json:"safety_op_id,omitempty"`
	SafetySnapshotID string `json:"safety_snapshot_id,omitempty"`
	SafetyDone       bool   `json:"safety_done,omitempty"`
	// Collections are the collections written, by archive index.
	Collections    map[int]*collCheckpoint `json:"collections"`
	Dropped        []string                `json:"dropped,omitempty"`
	RecordsWritten int64                   `json:"records_written"`
	WriteSeconds   float64                 `json:"write_seconds"`
	StartedAt      time.Time               `json:"started_at"`
}

// collCheckpoint is one collection's progress.
type collCheckpoint struct {
	Collection string `json:"collection"`
	Target     string `json:"target"`
	Action     string `json:"action"`
	Stage      string `json:"stage,omitempty"`
	// WorkID is the collection written to: the staging collection, the
	// recreated target (in place) or the live target (batch-level).
	WorkID string `json:"work_id,omitempty"`
	// NextBatch: the collection's archive batches before it are written
	// and verified.
	NextBatch int     `json:"next_batch"`
	Records   int64   `json:"records"`
	MaxDiff   float64 `json:"max_abs_diff,omitempty"`
	// FloatsOff: metadata floats Chroma stored a few ULPs off.
	FloatsOff int64 `json:"metadata_floats_off,omitempty"`
}

func (s *Service) loadCheckpoint(ctx context.Context, opID string) (*checkpoint, error) {
	ck, _, err := bus.GetJSON[checkpoint](ctx, s.assets.State, contract.CheckpointKey(opID), "checkpoint of "+opID)
	if err != nil || ck == nil {
		return nil, err
	}
	if ck.Collections == nil {
		ck.Collections = map[int]*collCheckpoint{}
	}
	return ck, nil
}

func (s *Service) saveCheckpoint(ctx context.Context, ck *checkpoint) error {
	data, err := json.Marshal(ck)
	if err != nil {
		return fmt.Errorf("encode checkpoint: %w", err)
	}
	if _, err := s.assets.State.Put(ctx, contract.CheckpointKey(ck.OpID), data); err != nil {
		return fmt.Errorf("save checkpoint of %s: %w", ck.OpID, err)
	}
	return nil
}
