package watchdog

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/bus"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/disk"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/fence"
	"github.com/nats-io/nats.go/jetstream"
)

// condition is what this instance sees of one pause reason.
type condition struct {
	reason  string // the pause reason (contract.Pause*)
	name    string // the alert's name: connectivity, disk, jetstream_storage
	known   bool   // observed at least once since the start
	active  bool   // failing: running jobs are paused for it
	healthy bool   // the latest observation passed: its pauses may be lifted
	detail  string
	since   time.Time
	figures map[string]any
}

// setCondition records an observation; a change between failing and not
// is audited as an alert or its recovery, and the ticker applies it to
// the running jobs at once.
func (s *Service) setCondition(ctx context.Context, reason, name string, active, healthy bool, detail string, figures map[string]any) {
	s.mu.Lock()
	c := s.conds[reason]
	if c == nil {
		c = &condition{reason: reason, name: name}
		s.conds[reason] = c
	}
	changed := c.active != active
	since := c.since
	if !changed {
		c.known, c.healthy, c.detail, c.figures = true, healthy, detail, figures
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	// The event goes out before the condition changes (below): a tick
	// that pauses or resumes jobs on the new state comes after it in the
	// audit trail. Each condition is set by one loop, so nothing changes
	// it meanwhile.
	if active {
		s.observeTrigger(name)
	}
	ev := contract.AuditEvent{Action: "alert." + name, Outcome: contract.OutcomeAlert, Reason: detail, Figures: maps.Clone(figures)}
	if ev.Figures == nil {
		ev.Figures = map[string]any{}
	}
	if active {
		s.log.Warn("alert raised", "alert", name, "detail", detail)
		ev.Reason += "; running migrations are paused until it recovers"
	} else {
		s.log.Info("alert recovered", "alert", name, "detail", detail)
		ev.Outcome = contract.OutcomeCompleted
		ev.Reason = "recovered: " + detail
		ev.Figures["alert_seconds"] = time.Since(since).Seconds()
	}
	s.emit(ctx, "", ev)

	s.mu.Lock()
	if active {
		c.since = time.Now().UTC()
	}
	c.known, c.active, c.healthy, c.detail, c.figures = true, active, healthy, detail, figures
	s.mu.Unlock()
	s.wake()
}

// heartbeatLoop checks Chroma's heartbeat every HeartbeatInterval;
// HeartbeatFailures failures in a row raise the connectivity alert, the
// next success lifts it.
func (s *Service) heartbeatLoop(ctx context.Context) {
	failures := 0
	every(ctx, s.cfg.HeartbeatInterval, func() {
		hctx, cancel := context.WithTimeout(ctx, s.cfg.HeartbeatTimeout)
		err := s.chroma.Heartbeat(hctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		figures := map[string]any{"chroma_url": s.cfg.ChromaURL, "threshold": s.cfg.HeartbeatFailures,
			"interval_seconds": s.cfg.HeartbeatInterval.Seconds()}
		if err == nil {
			figures["failures_before"] = failures
			s.setCondition(ctx, contract.PauseConnectivity, "connectivity", false, true,
				fmt.Sprintf("Chroma at %s answers its heartbeat", s.cfg.ChromaURL), figures)
			failures = 0
		} else {
			failures++
			figures["consecutive_failures"], figures["error"] = failures, err.Error()
			why := err.Error()
			if chroma.NotAnswering(err) { // "context deadline exceeded" says nothing to an operator
				why = fmt.Sprintf("no answer within %s (is it hung or overloaded, or are packets to it dropped?)", s.cfg.HeartbeatTimeout)
			}
			s.setCondition(ctx, contract.PauseConnectivity, "connectivity", failures >= s.cfg.HeartbeatFailures, false,
				fmt.Sprintf("Chroma at %s failed %d heartbeats in a row (threshold %d, one every %s): %s",
					s.cfg.ChromaURL, failures, s.cfg.HeartbeatFailures, s.cfg.HeartbeatInterval, why), figures)
		}
	})
}

// diskLoop checks the watched paths and JetStream's storage every
// DiskInterval.
func (s *Service) diskLoop(ctx context.Context) {
	every(ctx, s.cfg.DiskInterval, func() {
		s.checkDisk(ctx)
		s.checkJetStream(ctx)
		s.liftAbsentDiskPauses(ctx)
	})
}

// liftAbsentDiskPauses lifts the disk pauses of instances that no longer
// run. A disk reason (disk@<instance>) is lifted only by the instance
// that watches its paths, so one whose instance stopped (a restarted serve
// is a new instance: its name has its pid) would hold its job paused for
// ever. An instance missing from the micro discovery at two checks in a
// row, DiskInterval apart, is gone; its pauses are lifted (the job resumed
// if nothing else holds it), and the instances that watch those paths now
// pause it again if the disk is still low. Nothing is lifted when the
// discovery does not find this instance itself.
//
// A connectivity pause is held the same way by the instance that set it
// (instances may disagree about Chroma: one cut off from it); another
// lifts it once that instance is gone and it finds Chroma answering.
func (s *Service) liftAbsentDiskPauses(ctx context.Context) {
	recs := s.cached()
	held := map[string]bool{}
	for i := range recs {
		for _, p := range recs[i].PausedBy {
			if inst := s.otherOwner(p); inst != "" && pausable(&recs[i]) {
				held[inst] = true
			}
		}
	}
	if len(held) == 0 {
		s.absent = nil
		return
	}
	running, err := s.runningInstances(ctx)
	if err != nil || !running[s.cfg.Instance] {
		if err != nil {
			s.log.Warn("cannot list the running watchdog instances; the disk pauses of stopped ones stay", "err", err)
		}
		return
	}
	before, absent := s.absent, map[string]bool{}
	for inst := range held {
		if !running[inst] {
			absent[inst] = true
		}
	}
	s.absent = absent
	s.mu.Lock()
	conn := s.conds[contract.PauseConnectivity]
	connHealthy := conn != nil && conn.known && conn.healthy && !conn.active
	s.mu.Unlock()
	for i := range recs {
		r := &recs[i]
		for _, p := range r.PausedBy {
			inst := s.otherOwner(p)
			if inst == "" || !absent[inst] || !before[inst] || !pausable(r) {
				continue
			}
			if p.Reason == contract.PauseConnectivity {
				if connHealthy {
					s.unpause(ctx, r.Job, condition{reason: p.Reason, name: "connectivity",
						detail: fmt.Sprintf("watchdog instance %s, which paused it for Chroma not answering, no longer runs, and Chroma at %s answers", inst, s.cfg.ChromaURL)}, r)
				}
				continue
			}
			s.unpause(ctx, r.Job, condition{reason: p.Reason, name: "disk",
				detail: fmt.Sprintf("watchdog instance %s, which paused it for low free disk space on the paths it watches, no longer runs", inst)}, r)
		}
	}
}

// otherOwner is the other instance that alone may lift pause p: the one
// watching the paths of a disk pause, or the one that found Chroma not
// answering; "" when p is this instance's, or anyone's to lift.
func (s *Service) otherOwner(p contract.PauseReason) string {
	inst, ok := strings.CutPrefix(p.Reason, contract.PauseDiskPrefix)
	if !ok && p.Reason == contract.PauseConnectivity {
		inst = p.Instance
	}
	if inst == s.cfg.Instance {
		return ""
	}
	return inst
}

// runningInstances are the watchdog instances of this prefix that answer
// the micro discovery within a second.
func (s *Service) runningInstances(ctx context.Context) (map[string]bool, error) {
	infos, stop, err := bus.AskServiceInfo(ctx, s.nc, ServiceName)
	if err != nil {
		return nil, err
	}
	defer stop()
	api := s.subj.API("")
	ctx, cancel := context.WithTimeout(ctx, restorerWait)
	defer cancel()
	running := map[string]bool{}
	for {
		select {
		case info := <-infos:
			if bus.ServesUnder(info, api) {
				running[bus.InstanceName(info)] = true
			}
		case <-ctx.Done():
			return running, nil
		}
	}
}

// every calls check at once, then every interval until ctx ends.
func every(ctx context.Context, interval time.Duration, check func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		check()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// checkDisk compares the free space of every watched path with the
// threshold. A path that cannot be read is logged, not counted as full.
func (s *Service) checkDisk(ctx context.Context) {
	if len(s.cfg.DiskPaths) == 0 {
		return
	}
	minFree := s.diskMinFree.Load()
	free := map[string]uint64{}
	var low []string
	for _, p := range s.cfg.DiskPaths {
		n, err := disk.Free(p)
		if err != nil {
			s.log.Warn("cannot read free disk space", "path", p, "err", err)
			continue
		}
		free[p] = n
		if n < minFree {
			low = append(low, fmt.Sprintf("%s (%s free)", p, disk.Size(n)))
		}
	}
	if len(free) == 0 {
		return
	}
	figures := map[string]any{"free_bytes": free, "min_free_bytes": minFree, "paths": s.cfg.DiskPaths}
	detail := fmt.Sprintf("free disk space is at least %s on every watched path (%s)", disk.Size(minFree), strings.Join(s.cfg.DiskPaths, ", "))
	if len(low) > 0 {
		figures["low_paths"] = low
		detail = fmt.Sprintf("free disk space under the threshold of %s on %s", disk.Size(minFree), strings.Join(low, ", "))
	}
	s.setCondition(ctx, contract.PauseDiskPrefix+s.cfg.Instance, "disk", len(low) > 0, len(low) == 0, detail, figures)
}

// checkJetStream compares JetStream's file storage with the account's
// limit and every stream's byte limit.
func (s *Service) checkJetStream(ctx context.Context) {
	if s.cfg.JetStreamNear < 0 {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ai, err := s.js.AccountInfo(cctx)
	if err != nil {
		s.log.Warn("cannot read JetStream account usage", "err", err)
		return
	}
	near := s.cfg.JetStreamNear
	var full []string
	figures := map[string]any{"near_share": near, "account_store_bytes": ai.Store, "account_max_store_bytes": ai.Limits.MaxStore}
	if d := bus.NearLimit("account storage", ai.Store, ai.Limits.MaxStore, near); d != "" {
		full = append(full, d)
	}
	streams := map[string]float64{}
	lister := s.js.ListStreams(cctx)
	for info := range lister.Info() {
		if info.Config.MaxBytes <= 0 {
			continue
		}
		streams[info.Config.Name] = float64(info.State.Bytes) / float64(info.Config.MaxBytes)
		if d := bus.NearLimit("stream "+info.Config.Name, info.State.Bytes, info.Config.MaxBytes, near); d != "" {
			full = append(full, d)
		}
	}
	if err := lister.Err(); err != nil {
		s.log.Warn("cannot list JetStream streams", "err", err)
		return
	}
	figures["stream_shares"] = streams
	detail := fmt.Sprintf("JetStream storage is under %.0f%% of every limit", 100*near)
	if len(full) > 0 {
		figures["near_limit"] = full
		detail = fmt.Sprintf("JetStream storage is near its limit (%.0f%% or more): %s", 100*near, strings.Join(full, "; "))
	}
	s.setCondition(ctx, contract.PauseJetStream, "jetstream_storage", len(full) > 0, len(full) == 0, detail, figures)
}

// reconcilePauses pauses every pausable run for each failing condition it
// is not yet paused for, and lifts the reasons this instance sees healthy
// again; a run is resumed when its last reason is lifted. Each change is a
// compare-and-set, so of several instances one sends each command.
func (s *Service) reconcilePauses(ctx context.Context, recs []contract.MigrationRecord) {
	s.mu.Lock()
	conds := map[string]condition{}
	for k, c := range s.conds {
		conds[k] = *c
	}
	s.mu.Unlock()
	keys := slices.Sorted(maps.Keys(conds))
	for i := range recs {
		r := &recs[i]
		if !pausable(r) {
			continue
		}
		for _, k := range keys {
			if c := conds[k]; c.active && !hasReason(r, k) {
				s.pause(ctx, r.Job, c)
			}
		}
		for _, p := range r.PausedBy {
			if op, ok := strings.CutPrefix(p.Reason, contract.PauseFencePrefix); ok {
				s.liftFencePause(ctx, r, op, p.Reason)
				continue
			}
			if c, ok := conds[p.Reason]; ok && c.known && c.healthy && !c.active && s.otherOwner(p) == "" {
				s.unpause(ctx, r.Job, c, r)
			}
		}
	}
}

// pauseIfFenced pauses a run whose database a rollback fences, for as long
// as that rollback's fence is raised.
func (s *Service) pauseIfFenced(ctx context.Context, r *contract.MigrationRecord) error {
	if r == nil || !pausable(r) {
		return nil
	}
	f, err := fence.Get(ctx, s.assets.State, r.Tenant, r.Database)
	if err != nil || f == nil {
		return err
	}
	s.pause(ctx, r.Job, condition{reason: contract.PauseFencePrefix + f.OpID, name: "fence",
		detail: fmt.Sprintf("rollback %s fences %s/%s (raised %s): write nothing until it is lowered",
			f.OpID, r.Tenant, r.Database, f.RaisedAt.UTC().Format(time.RFC3339))})
	return nil
}

// liftFencePause lifts a run's pause for the fence of rollback op once that
// fence is no longer raised (unpause keeps the run paused while another
// rollback fences the database).
func (s *Service) liftFencePause(ctx context.Context, r *contract.MigrationRecord, op, reason string) {
	f, err := fence.Get(ctx, s.assets.State, r.Tenant, r.Database)
	if err != nil || (f != nil && f.OpID == op) {
		return
	}
	s.unpause(ctx, r.Job, condition{reason: reason, name: "fence",
		detail: fmt.Sprintf("rollback %s lowered its write fence of %s/%s", op, r.Tenant, r.Database)}, r)
}

func hasReason(r *contract.MigrationRecord, reason string) bool {
	return slices.ContainsFunc(r.PausedBy, func(p contract.PauseReason) bool { return p.Reason == reason })
}

func (s *Service) pause(ctx context.Context, job string, c condition) {
	var first bool
	next, written, err := s.update(ctx, job, func(cur *contract.MigrationRecord) *contract.MigrationRecord {
		if cur == nil || !pausable(cur) || hasReason(cur, c.reason) {
			return nil
		}
		n := *cur
		first = len(cur.PausedBy) == 0
		n.PausedBy = append(slices.Clone(cur.PausedBy), contract.PauseReason{Reason: c.reason, Instance: s.cfg.Instance, Detail: c.detail, Since: time.Now().UTC()})
		n.Status = contract.MigrationPaused
		return &n
	})
	if err != nil {
		s.log.Warn("cannot record a pause", "job", job, "reason", c.reason, "err", err)
		return
	}
	if !written {
		return
	}
	if first {
		s.control(ctx, next, contract.ControlPause, c.detail, "")
		return
	}
	s.log.Info("paused job also held for another reason", "job", job, "reason", c.reason)
}

func (s *Service) unpause(ctx context.Context, job string, c condition, r *contract.MigrationRecord) {
	if len(r.PausedBy) == 1 && s.fenced(ctx, r.Tenant, r.Database) {
		// A rollback holds the database: the job stays paused, this
		// reason kept, until its fence is lowered; the restorer leaves a
		// job with a reason to the watchdog, and the first reconcile
		// after that lifts the reason and resumes the job.
		return
	}
	var resume bool
	next, written, err := s.update(ctx, job, func(cur *contract.MigrationRecord) *contract.MigrationRecord {
		if cur == nil || !hasReason(cur, c.reason) {
			return nil
		}
		n := *cur
		n.PausedBy = slices.DeleteFunc(slices.Clone(cur.PausedBy), func(p contract.PauseReason) bool { return p.Reason == c.reason })
		resume = len(n.PausedBy) == 0 && pausable(cur)
		if resume {
			n.Status = contract.MigrationRunning
		}
		return &n
	})
	if err != nil {
		s.log.Warn("cannot record a resume", "job", job, "reason", c.reason, "err", err)
		return
	}
	if !written || !resume {
		return
	}
	// A rollback that raised its fence since the check above paused the
	// runs it found running then, and this one was still paused: it is
	// held for that fence instead of resumed. (One raised after this read
	// finds the run running, and pauses it itself.)
	if f, err := fence.Get(ctx, s.assets.State, next.Tenant, next.Database); err == nil && f != nil {
		s.log.Info("not resumed: a rollback fences its database", "job", job, "op_id", f.OpID)
		if err := s.pauseIfFenced(ctx, next); err != nil {
			s.log.Warn("cannot hold the run for the fence", "job", job, "err", err)
		}
		return
	}
	s.control(ctx, next, contract.ControlResume, "recovered: "+c.detail, "")
}

// fenced says a write fence is raised on tenant/database; when it cannot
// tell, it says so, so that a job is not resumed blindly.
func (s *Service) fenced(ctx context.Context, tenant, database string) bool {
	_, err := s.assets.State.Get(ctx, contract.FenceKey(tenant, database))
	if err == nil {
		return true
	}
	return !bus.IsNotFound(err) && !errors.Is(err, jetstream.ErrKeyDeleted)
}
