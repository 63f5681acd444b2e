package restorer

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/bus"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
)

// pauseJobs tells the migrations running against the target to pause. The
// list is taken once and checkpointed, so the jobs paused are the jobs
// resumed, whichever attempt ends the rollback.
func (j *job) pauseJobs(ctx context.Context) error {
	j.mu.Lock()
	listed := j.ck.PausedListed
	j.mu.Unlock()
	if !listed {
		jobs, err := j.migrations(ctx, contract.MigrationRunning, contract.MigrationPaused)
		if err != nil {
			return err
		}
		var names []string
		for _, m := range jobs {
			if m.Status == contract.MigrationRunning {
				names = append(names, m.Job)
			}
		}
		if err := j.saveCheckpoint(ctx, func(ck *checkpoint) { ck.PausedListed, ck.Paused = true, names }); err != nil {
			return err
		}
	}
	j.mu.Lock()
	paused := append([]string(nil), j.ck.Paused...)
	j.mu.Unlock()
	for _, job := range paused {
		j.control(job, contract.ControlPause, fmt.Sprintf("rollback %s of %s/%s to snapshot %s: writes are fenced until it ends",
			j.cmd.OpID, j.sp.tenant, j.sp.database, j.sp.m.SnapshotID))
	}
	return nil
}

// resumeJobs tells the jobs this rollback paused to resume, unless their
// migration has ended meanwhile or is the one being rolled back.
func (j *job) resumeJobs(ctx context.Context) {
	j.mu.Lock()
	var paused []string
	if j.ck != nil {
		paused = append(paused, j.ck.Paused...)
	}
	j.mu.Unlock()
	if len(paused) == 0 {
		return
	}
	current, err := j.migrations(ctx)
	if err != nil {
		j.log.Warn("cannot read migration records; resuming every paused job", "err", err)
	}
	records := map[string]*contract.MigrationRecord{}
	for i := range current {
		records[current[i].Job] = &current[i]
	}
	for _, job := range paused {
		if job == j.cmd.Request.Job {
			continue // the migration this rollback undoes is not resumed
		}
		m, ok := records[job]
		if err == nil && (!ok || (m.Status != contract.MigrationRunning && m.Status != contract.MigrationPaused)) {
			continue
		}
		// The watchdog holds it paused for reasons of its own (Chroma
		// unreachable, low disk, its trigger fired and its rollback is
		// yet to run): it resumes it, or ends the run, itself.
		if ok && (len(m.PausedBy) > 0 || m.Trigger != "") {
			j.log.Info("paused migration not resumed: the watchdog holds it", "job", job, "paused_by", len(m.PausedBy), "trigger", m.Trigger)
			continue
		}
		j.control(job, contract.ControlResume, fmt.Sprintf("rollback %s of %s/%s ended: writes may go on", j.cmd.OpID, j.sp.tenant, j.sp.database))
	}
}

// migrations lists the migration records of the job's tenant/database,
// only those in one of statuses when any are given.
func (j *job) migrations(ctx context.Context, statuses ...string) ([]contract.MigrationRecord, error) {
	var out []contract.MigrationRecord
	err := bus.EachValue(ctx, j.s.assets.State, contract.MigrationKey(">"), func(key string, data []byte) error {
		var m contract.MigrationRecord
		if err := json.Unmarshal(data, &m); err != nil {
			j.log.Warn("unreadable migration record skipped", "key", key, "err", err)
			return nil
		}
		if m.Tenant == j.sp.tenant && m.Database == j.sp.database && (len(statuses) == 0 || slices.Contains(statuses, m.Status)) {
			out = append(out, m)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list migration records: %w", err)
	}
	return out, nil
}

// control sends a command to a migration job; jobs not listening miss it,
// which is why the fence in KV is what counts.
func (j *job) control(job, command, reason string) {
	if err := contract.ValidToken(job); err != nil {
		j.log.Warn("migration job name cannot be a subject token; not told", "job", job, "command", command, "err", err)
		return
	}
	c := contract.Control{Envelope: contract.NewEnvelope(contract.TypeControl), Job: job, Command: command, Reason: reason, OpID: j.cmd.OpID}
	data, _ := json.Marshal(c)
	if err := j.s.nc.Publish(j.s.subj.Control(job), data); err != nil {
		j.log.Warn("could not send control command", "job", job, "command", command, "err", err)
		return
	}
	j.log.Info("migration job told", "job", job, "command", command)
}
