package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/metrics"
	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"
)

// planTimeout bounds a plan request: the restorer verifies the whole archive
// before it answers.
const planTimeout = time.Hour

func (a *app) rollbackCmd() *cobra.Command {
	var (
		req            contract.RollbackRequest
		dryRun, yes    bool
		partial        bool
		failed, rename []string
		batches        []string
		noWait         bool
		wait           time.Duration
	)
	cmd := &cobra.Command{
		Use:   "rollback SNAPSHOT",
		Short: "Restore a snapshot: full, partial (--partial --failed-collections) or batch-level (--batches)",
		Long: `Restore a snapshot (id or name) into Chroma.

The archive is verified and the plan printed first; nothing changes until you
type 'yes' (or pass --yes). --dry-run stops after the plan.`,
		Args: oneArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			req.SnapshotID = args[0]
			if err := a.buildRollback(&req, partial, failed, rename, batches); err != nil {
				return err
			}
			nc, err := a.connect()
			if err != nil {
				return err
			}
			defer nc.Close()
			ctx := cmd.Context()

			req.Envelope = contract.NewEnvelope(contract.TypeRollbackRequest)
			req.Actor = a.actor
			var planned contract.RollbackReply
			if err := a.request(ctx, nc, a.subj.API("rollback", "plan"), &req, &planned, max(a.timeout, planTimeout)); err != nil {
				return err
			}
			if planned.Plan == nil {
				return fmt.Errorf("the restorer answered without a plan (status %q)", planned.Status)
			}
			plan := *planned.Plan
			if dryRun {
				if a.json {
					return a.printJSON(plan)
				}
				a.printPlan(&plan)
				fmt.Fprintln(a.stdout, "Dry run: nothing was changed.")
				return nil
			}
			if !a.json {
				a.printPlan(&plan)
			}
			if !yes {
				for _, w := range lossWarning(&plan) {
					fmt.Fprintln(a.stderr, "WARNING:", w)
				}
				ok, err := a.confirm()
				if err != nil {
					return err
				}
				if !ok {
					return errors.New("rollback not confirmed; nothing was changed")
				}
			}

			req.Envelope = contract.NewEnvelope(contract.TypeRollbackRequest)
			req.Confirm = true
			var reply contract.RollbackReply
			if err := a.request(ctx, nc, a.subj.API("rollback", "start"), &req, &reply, max(a.timeout, planTimeout)); err != nil {
				return err
			}
			if reply.Refused != "" {
				return fmt.Errorf("rollback refused: %s", reply.Refused)
			}
			if noWait {
				if a.json {
					return a.printJSON(reply)
				}
				fmt.Fprintln(a.stdout, reply.OpID)
				return nil
			}
			op, err := a.waitAndPrint(ctx, nc, reply.OpID, wait, followRollback(reply.OpID))
			if err != nil {
				return err
			}
			return rollbackOutcome(op)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&dryRun, "dry-run", false, "verify the archive and print the plan; change nothing")
	f.BoolVar(&yes, "yes", false, "do not ask for confirmation")
	f.BoolVar(&partial, "partial", false, "restore only --failed-collections; leave every other collection as it is")
	// Repeatable like --batches: a string flag given twice kept only its
	// last value, restoring (or renaming) less than was asked, silently.
	f.StringArrayVar(&failed, "failed-collections", nil, "comma-separated collection names (with --partial; repeatable)")
	f.StringArrayVar(&batches, "batches", nil, "COLLECTION:batch_000000,batch_000001 (repeatable): upsert just these batches (snapshot info shows which records each holds)")
	f.BoolVar(&req.DropExtra, "drop-extra", false, "delete collections that are not in the snapshot (full rollback)")
	f.BoolVar(&req.InPlace, "in-place", false, "restore into the live collections instead of staging and swapping")
	f.BoolVar(&req.NoSafetySnapshot, "no-safety-snapshot", false, "skip the snapshot of what will be overwritten")
	f.StringVar(&req.TargetTenant, "target-tenant", "", "restore into this tenant (default: the snapshot's)")
	f.StringVar(&req.TargetDatabase, "target-database", "", "restore into this database (default: the snapshot's)")
	f.StringArrayVar(&rename, "rename", nil, "comma-separated old:new collection renames (repeatable)")
	f.StringVar(&req.ChromaURL, "chroma-url", "", "restore into another Chroma server (default: the restorer's)")
	f.StringVar(&req.Reason, "reason", "", "why, recorded in the audit trail")
	f.BoolVar(&noWait, "no-wait", false, "print the operation id once queued, without waiting")
	f.DurationVar(&wait, "wait-timeout", 6*time.Hour, "give up waiting after this long (the rollback goes on)")
	return cmd
}

// buildRollback validates the flags before anything is asked of the server.
func (a *app) buildRollback(req *contract.RollbackRequest, partial bool, failed, rename, batches []string) error {
	names := splitList(failed...)
	switch {
	case partial && len(names) == 0:
		return usageErr("--partial needs --failed-collections a,b")
	case !partial && len(names) > 0:
		return usageErr("--failed-collections needs --partial")
	case partial && len(batches) > 0:
		return usageErr("--partial and --batches cannot be combined: --batches already touches only what it names")
	case req.DropExtra && (partial || len(batches) > 0):
		return usageErr("--drop-extra applies to a full rollback only")
	}
	req.Collections = names
	for _, spec := range batches {
		coll, list, ok := strings.Cut(spec, ":")
		ids := splitList(list)
		if !ok || strings.TrimSpace(coll) == "" || len(ids) == 0 {
			return usageErr("--batches %q: want COLLECTION:batch_000000[,batch_000001...]", spec)
		}
		if req.Batches == nil {
			req.Batches = map[string][]string{}
		}
		coll = strings.TrimSpace(coll)
		req.Batches[coll] = append(req.Batches[coll], ids...)
	}
	for _, pair := range splitList(rename...) {
		from, to, ok := strings.Cut(pair, ":")
		if !ok || from == "" || to == "" {
			return usageErr("--rename %q: want old:new", pair)
		}
		if err := contract.ValidateChromaName("--rename", to); err != nil {
			return usageErr("%v", err)
		}
		if req.Rename == nil {
			req.Rename = map[string]string{}
		}
		if _, dup := req.Rename[from]; dup {
			return usageErr("--rename names %q twice", from)
		}
		req.Rename[from] = to
	}
	return nil
}

// splitList is the comma-separated items of every one of ss (a repeatable
// flag's values), trimmed, the empty ones left out.
func splitList(ss ...string) []string {
	var out []string
	for _, s := range ss {
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

// lossWarning is what the prompt warns of, as the seed tool did: which
// target the rollback restores, and what it overwrites or deletes, with
// whether anything keeps that.
func lossWarning(p *contract.RollbackPlan) []string {
	var replaced, dropped, upserted int
	for _, it := range p.Items {
		switch it.Action {
		case contract.PlanReplace:
			replaced++
		case contract.PlanDrop:
			dropped++
		case contract.PlanUpsert:
			upserted++
		}
	}
	name := p.SnapshotID
	if p.SnapshotName != "" {
		name += " (" + p.SnapshotName + ")"
	}
	where := p.Tenant + "/" + p.Database
	if p.ChromaURL != "" {
		// Not the configured Chroma: a database of the same name there
		// is untouched, and the operator confirms which server it is.
		where += " on " + p.ChromaURL
	}
	out := []string{fmt.Sprintf("CRITICAL: this will RESTORE %s from snapshot %s", where, name)}
	var what []string
	if replaced > 0 {
		what = append(what, counted(replaced, "collection")+" replaced")
	}
	if upserted > 0 {
		what = append(what, "the named batches of "+counted(upserted, "collection")+" overwritten")
	}
	if dropped > 0 {
		what = append(what, counted(dropped, "collection")+" deleted")
	}
	if len(what) == 0 {
		return out // it only creates collections
	}
	kept := "the safety snapshot taken first keeps it"
	if !p.SafetySnapshot {
		kept = "nothing keeps it (--no-safety-snapshot)"
	}
	return append(out, fmt.Sprintf("%s: everything written to them since the snapshot will be LOST; %s", strings.Join(what, ", "), kept))
}

// confirm asks as the seed tool did and accepts only "yes".
func (a *app) confirm() (bool, error) {
	fmt.Fprint(a.stderr, "Type 'yes' to confirm: ")
	line, err := bufio.NewReader(a.stdin).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return false, fmt.Errorf("read confirmation: %w", err)
	}
	if strings.TrimSpace(line) == "" && errors.Is(err, io.EOF) {
		return false, usageErr("no confirmation on stdin; type 'yes' or pass --yes (nothing was changed)")
	}
	return strings.TrimSpace(line) == "yes", nil
}

// maxUntouchedRows is the most collections a plan leaves untouched that
// it lists one by one; more are counted in one line.
const maxUntouchedRows = 10

func (a *app) printPlan(p *contract.RollbackPlan) {
	var modes []string
	modes = append(modes, p.Mode)
	switch {
	case p.Mode == "batches": // always into the live collections
		modes = append(modes, "upsert into the live collections")
	case p.InPlace:
		modes = append(modes, "in place")
	default:
		modes = append(modes, "stage and swap")
	}
	if p.SafetySnapshot {
		modes = append(modes, "safety snapshot first")
	}
	target := p.Tenant + "/" + p.Database
	if p.ChromaURL != "" {
		target += " on " + p.ChromaURL
	}
	fmt.Fprintf(a.stdout, "Rollback plan: snapshot %s (%s) of %s/%s -> %s [%s]\n",
		p.SnapshotID, p.SnapshotName, p.SourceTenant, p.SourceDatabase, target, strings.Join(modes, ", "))
	verified := "NOT verified"
	if p.ArchiveVerified {
		verified = "verified"
	}
	fmt.Fprintf(a.stdout, "Archive: %s\n", verified)
	t := newTable("  ")
	if len(p.Items) == 0 {
		// Only a full rollback of an empty snapshot into an empty
		// database plans nothing: a header alone would look cut short.
		t.line("No collections: the snapshot holds none and the target database has none.")
	} else {
		t.row("COLLECTION", "TARGET", "ACTION", "IN SNAPSHOT", "NOW", "TO WRITE", "BATCHES")
	}
	// What the rollback changes first: in a partial rollback of a few of
	// a database's hundreds of collections, the rows of those few were
	// scattered among the others (in the snapshot's order, by id).
	var untouched []contract.PlanItem
	row := func(it *contract.PlanItem) {
		now := fmt.Sprint(it.CurrentRecords)
		if it.CurrentRecords < 0 {
			now = "absent"
		}
		coll := it.Collection
		if coll == "" {
			coll = "-"
		}
		t.row(coll, it.Target, it.Action, it.SnapshotRecords, now, it.WriteRecords, planBatches(it))
	}
	for _, it := range p.Items {
		if it.Action == contract.PlanUntouched {
			untouched = append(untouched, it)
			continue
		}
		row(&it)
	}
	if len(untouched) > maxUntouchedRows {
		t.line(fmt.Sprintf("and %s untouched (--json lists them)", counted(len(untouched), "other collection")))
	} else {
		for _, it := range untouched {
			row(&it)
		}
	}
	t.print(a.stdout)
	rate := "measured"
	switch {
	case !p.AddRateMeasured:
		rate = "assumed: nothing was restored into this Chroma yet"
	case p.SecondsPerCollectionAssumed && p.WriteCollections > 0:
		rate = "measured; the time for each collection assumed until restores of other shapes measure it"
	}
	perColl := ""
	if p.SecondsPerCollection > 0 && p.WriteCollections > 0 {
		perColl = fmt.Sprintf(" and %s for each of %s", roundDuration(p.SecondsPerCollection), counted(p.WriteCollections, "collection"))
		if p.WriteCollections == 1 {
			perColl = fmt.Sprintf(" and %s for its one collection", roundDuration(p.SecondsPerCollection))
		}
	}
	fmt.Fprintf(a.stdout, "Records to write: %d; estimated time %s at %.0f records/s%s (%s)\n",
		p.WriteRecords, roundDuration(p.EstimatedSeconds), p.AddRate, perColl, rate)
	for _, w := range p.Warnings {
		fmt.Fprintln(a.stdout, "warning:", w)
	}
}

// planBatches is a plan item's batches, each with its records when the
// restorer said (restorers before 2026-11-29 did not).
func planBatches(it *contract.PlanItem) string {
	if len(it.BatchCounts) != len(it.Batches) {
		return strings.Join(it.Batches, ",")
	}
	out := make([]string, len(it.Batches))
	for i, b := range it.Batches {
		out[i] = fmt.Sprintf("%s (%d)", b, it.BatchCounts[i])
	}
	return strings.Join(out, ", ")
}

func (a *app) printOperation(op *contract.Operation) {
	fmt.Fprintf(a.stdout, "Rollback %s: %s\n", op.OpID, op.Status)
	// A rollback elsewhere says where: its report names collections only,
	// and rollback-status, run later, shows no plan once it ended.
	if p := op.Plan; p != nil && (p.ChromaURL != "" || p.Tenant != p.SourceTenant || p.Database != p.SourceDatabase) {
		target := p.Tenant + "/" + p.Database
		if p.ChromaURL != "" {
			target += " on " + p.ChromaURL
		}
		fmt.Fprintf(a.stdout, "Restored into: %s (snapshot %s of %s/%s)\n", target, p.SnapshotID, p.SourceTenant, p.SourceDatabase)
	}
	if op.Error != "" {
		fmt.Fprintf(a.stdout, "Error: %s\n", op.Error)
	}
	defer a.printOperationWarnings(op)
	r := op.Restore
	if r == nil {
		return
	}
	switch {
	case r.SafetySnapshotID == "":
	case op.Status == contract.StatusCompleted:
		fmt.Fprintf(a.stdout, "Safety snapshot: %s (roll back to it to undo this rollback)\n", r.SafetySnapshotID)
	default: // it may have changed nothing, or some collections
		fmt.Fprintf(a.stdout, "Safety snapshot: %s (the state before this rollback: roll back to it to undo what it changed)\n", r.SafetySnapshotID)
	}
	if len(r.Collections) == 0 && op.Status == contract.StatusCompleted {
		// A rollback that stopped early (a redelivered one cancelled
		// before it read the snapshot) lists none either.
		fmt.Fprintln(a.stdout, "No collections: the snapshot holds none and the target database has none.")
	}
	t := newTable("  ")
	if len(r.Collections) > 0 {
		t.row("COLLECTION", "TARGET", "ACTION", "RECORDS", "VERIFIED", "EMBEDDINGS")
	}
	for _, c := range r.Collections {
		check := c.EmbeddingCheck
		if check == "" {
			check = "not checked"
		}
		if c.MaxAbsDiff > 0 {
			check += fmt.Sprintf(" (max diff %.3g)", c.MaxAbsDiff)
		}
		if c.MetadataFloatsOff > 0 {
			check += fmt.Sprintf("; %d metadata floats within 4 ULPs (Chroma cannot store them exactly)", c.MetadataFloatsOff)
		}
		t.row(c.Collection, c.Target, c.Action, c.Records, c.Verified, check)
		for _, d := range c.Differences {
			t.line("  difference: " + oneLine(d))
		}
	}
	t.print(a.stdout)
	fmt.Fprintf(a.stdout, "Records written: %d in %.1fs; verified: %v\n", r.RecordsWritten, r.Seconds, r.Verified)
	a.printPartlyRestored(op)
}

// printPartlyRestored says plainly which collections an in-place rollback
// that did not complete left half restored: each was deleted and is being
// refilled where readers see it, and the table's VERIFIED false is easy to
// read past (found by hand: a cancelled one left 12,500 of 40,000 records).
func (a *app) printPartlyRestored(op *contract.Operation) {
	if op.Status == contract.StatusCompleted || op.Plan == nil || !op.Plan.InPlace || op.Restore == nil {
		return
	}
	want := map[string]int64{}
	for _, it := range op.Plan.Items {
		if it.Action == contract.PlanReplace || it.Action == contract.PlanCreate {
			want[it.Target] = it.SnapshotRecords
		}
	}
	undo := "roll back to the same snapshot again to finish it"
	if id := op.Restore.SafetySnapshotID; id != "" {
		undo += ", or to the safety snapshot " + id + " to undo what this rollback changed"
	}
	for _, c := range op.Restore.Collections {
		n, ok := want[c.Target]
		if !ok || c.Verified || (c.Records == n && c.EmbeddingCheck != "") {
			continue
		}
		fmt.Fprintf(a.stdout, "warning: %q was restored in place and is left partly restored (%d of the snapshot's %d records written): %s\n",
			c.Target, c.Records, n, undo)
	}
}

// printOperationWarnings prints what the operation learned beyond its
// plan (whose warnings the plan printed): above all, a cleanup after a
// failure that could not be done (Chroma down), naming the staging
// collection left behind and what to rename back. Without it the operator
// would find stray "<name>__rb_<op>" collections, kept as extras by the
// next rollback and copied into every later snapshot.
//
// Once the restorer took those leftovers back (Chroma answered again), the
// warnings are history: it says so, and what became of each collection.
func (a *app) printOperationWarnings(op *contract.Operation) {
	for _, w := range addedWarnings(op) {
		fmt.Fprintln(a.stdout, "warning:", w)
	}
	if op.LeftoversCleared != nil {
		fmt.Fprintf(a.stdout, "Leftovers taken back at %s, once Chroma answered again; nothing of the above is left to do by hand, except as said here:\n",
			op.LeftoversCleared.UTC().Format(time.RFC3339))
		for _, n := range op.LeftoverNotes {
			fmt.Fprintln(a.stdout, "  "+n)
		}
	}
}

// addedWarnings are op's warnings that its plan did not give (the plan's
// were printed with the plan).
func addedWarnings(op *contract.Operation) []string {
	var planned []string
	if op.Plan != nil {
		planned = op.Plan.Warnings
	}
	var out []string
	for _, w := range op.Warnings {
		if !slices.Contains(planned, w) {
			out = append(out, w)
		}
	}
	return out
}

// rollbackOutcome maps a finished operation to the exit code: 0 when it
// completed and verified, 3 when the archive or the restored data did not
// verify, 1 otherwise (a Chroma outage, say, however far it got).
func rollbackOutcome(op *contract.Operation) error {
	if op.Status == contract.StatusCompleted && (op.Restore == nil || op.Restore.Verified) {
		return nil
	}
	if op.Status == contract.StatusCancelled {
		return fmt.Errorf("rollback %s was cancelled: %s", op.OpID, op.Error)
	}
	if op.FailureReason == metrics.ReasonVerification {
		return &exitError{code: exitVerification, err: fmt.Errorf("rollback %s did not verify: %s", op.OpID, op.Error)}
	}
	return fmt.Errorf("rollback %s failed: %s", op.OpID, op.Error)
}

func (a *app) rollbackStatusCmd() *cobra.Command {
	var wait bool
	var waitTimeout time.Duration
	cmd := &cobra.Command{
		Use:   "rollback-status OP_ID",
		Short: "Show a rollback operation's status, plan, progress and verification report; --wait follows it to its end",
		Args:  oneArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			nc, err := a.connect()
			if err != nil {
				return err
			}
			defer nc.Close()
			var op contract.Operation
			ref := contract.OperationRef{Envelope: contract.NewEnvelope(contract.TypeOperationRef), OpID: args[0], Actor: a.actor}
			if err := a.request(cmd.Context(), nc, a.subj.API("rollback", "status"), ref, &op, 0); err != nil {
				return err
			}
			if wait { // then the exit code says how it ended, as rollback's does
				if !contract.Ended(op.Status) {
					ended, err := a.waitAndPrint(cmd.Context(), nc, op.OpID, waitTimeout, followRollback(op.OpID))
					if err != nil {
						return err
					}
					op = *ended
				} else if a.json {
					if err := a.printJSON(op); err != nil {
						return err
					}
				} else {
					a.printOperation(&op)
				}
				return rollbackOutcome(&op)
			}
			if a.json {
				return a.printJSON(op)
			}
			a.printOperation(&op)
			if !contract.Ended(op.Status) {
				if op.Instance != "" {
					fmt.Fprintf(a.stdout, "Phase: %s (attempt %d, on %s)\n", op.Phase, op.Attempt, op.Instance)
				} else {
					fmt.Fprintf(a.stdout, "Phase: %s\n", op.Phase)
				}
				if p := op.Plan; p != nil {
					fmt.Fprintf(a.stdout, "Plan: %d records to write into %s, estimated %s\n", p.WriteRecords, counted(p.WriteCollections, "collection"),
						roundDuration(p.EstimatedSeconds))
				}
				if pr := a.lastProgress(cmd.Context(), nc, op.OpID, progressWait); pr != nil {
					fmt.Fprintf(a.stdout, "Progress: %s\n", progressText(pr))
				}
				fmt.Fprintf(a.stdout, "Follow it to its end with `chromadb-rollback rollback-status --wait %s`\n", op.OpID)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the rollback ends (a progress bar on a terminal), print its report and exit as rollback does")
	cmd.Flags().DurationVar(&waitTimeout, "wait-timeout", 6*time.Hour, "with --wait, give up waiting after this long (the rollback goes on)")
	return cmd
}

// progressWait bounds how long rollback-status looks for a running
// operation's progress.
const progressWait = 3 * time.Second

// lastProgress returns operation opID's latest progress, or nil. Progress
// is published as work goes on, not stored: the watchdog keeps the latest
// of every running operation (its status report), and without a watchdog
// the next message within limit is taken (one comes after every batch
// written, at most four a second).
func (a *app) lastProgress(ctx context.Context, nc *nats.Conn, opID string, limit time.Duration) *contract.Progress {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	sub, err := nc.SubscribeSync(a.subj.Progress(opID)) // before asking, so nothing falls between
	if err != nil {
		return nil
	}
	defer sub.Unsubscribe()
	var rep contract.StatusReport
	req := contract.StatusRequest{Envelope: contract.NewEnvelope(contract.TypeStatusRequest), Actor: a.actor}
	if a.request(ctx, nc, a.subj.API("status"), req, &rep, limit/2) == nil {
		for _, o := range rep.Operations {
			if o.Operation.OpID == opID && o.Progress != nil {
				return o.Progress
			}
		}
	}
	for {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			return nil
		}
		var p contract.Progress
		if json.Unmarshal(m.Data, &p) == nil {
			return &p
		}
	}
}

// waitAndPrint waits for a rollback to end (waitOperation) and prints its
// report, or its record with --json.
func (a *app) waitAndPrint(ctx context.Context, nc *nats.Conn, opID string, wait time.Duration, follow string) (*contract.Operation, error) {
	op, err := a.waitOperation(ctx, nc, opID, wait, follow)
	if err != nil {
		return nil, err
	}
	if a.json {
		return op, a.printJSON(op)
	}
	a.printOperation(op)
	return op, nil
}

// followRollback says how to follow a rollback the CLI stopped waiting for,
// and how to stop it.
func followRollback(opID string) string {
	return fmt.Sprintf("follow it with `chromadb-rollback rollback-status --wait %s`, stop it with `chromadb-rollback rollback-cancel %s`", opID, opID)
}

func (a *app) rollbackCancelCmd() *cobra.Command {
	var noWait bool
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "rollback-cancel OP_ID",
		Short: "Stop a running rollback at its next batch, and wait until it has stopped",
		Long: `Ask a running rollback to stop (chroma.api.rollback.cancel). It stops at its next
batch: staged collections are discarded and live ones keep what they held (an
in-place rollback leaves the collection it was writing partly restored; its
safety snapshot holds what was there). The fence is lowered and paused
migrations are resumed as at any end. Exits 0 once the rollback was cancelled,
1 when it ended otherwise first.`,
		Args: oneArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			nc, err := a.connect()
			if err != nil {
				return err
			}
			defer nc.Close()
			ctx := cmd.Context()
			var op contract.Operation
			ref := contract.OperationRef{Envelope: contract.NewEnvelope(contract.TypeOperationRef), OpID: args[0], Actor: a.actor}
			if err := a.request(ctx, nc, a.subj.API("rollback", "cancel"), ref, &op, 0); err != nil {
				return err
			}
			if noWait {
				if a.json {
					return a.printJSON(op)
				}
				// The cancel's own note, and what the rollback has
				// met so far; not the plan's warnings again.
				for _, w := range addedWarnings(&op) {
					fmt.Fprintln(a.stdout, w)
				}
				return nil
			}
			if !a.json {
				for _, w := range addedWarnings(&op) {
					fmt.Fprintln(a.stderr, w)
				}
			}
			ended, err := a.waitAndPrint(ctx, nc, op.OpID, wait, fmt.Sprintf("follow it with `chromadb-rollback rollback-status --wait %s`", op.OpID))
			if err != nil {
				return err
			}
			if ended.Status != contract.StatusCancelled {
				return fmt.Errorf("rollback %s ended %s before the cancel took effect", ended.OpID, ended.Status)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&noWait, "no-wait", false, "return once the cancel was requested")
	f.DurationVar(&wait, "wait-timeout", 10*time.Minute, "give up waiting after this long (the cancel stands)")
	return cmd
}

// roundDuration shows seconds to a second, or to a millisecond under one.
func roundDuration(seconds float64) time.Duration {
	d := time.Duration(seconds * float64(time.Second))
	if d < time.Second {
		return d.Round(time.Millisecond)
	}
	return d.Round(time.Second)
}
