package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/spf13/cobra"
)

func (a *app) cleanupCmd() *cobra.Command {
	var req contract.CleanupRequest
	cmd := &cobra.Command{
		Use:   "cleanup [--dry-run] [--older-than 72h]",
		Short: "Delete snapshots older than the retention period, unless something keeps them",
		Long: `Run retention now (chroma.api.snapshot.cleanup), as the snapshotter does daily
at 00:00 UTC. A snapshot older than the period (the snapshotter's --retention,
7d by default, or --older-than) is deleted, manifest first, then archive,
unless it is pinned (snapshot create --keep, snapshot keep ID), a running
migration or rollback uses it, or it is the newest verified snapshot of its
tenant/database (or the newest holding all its collections). --dry-run lists
what would be deleted and why each other snapshot is kept, and deletes nothing.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if req.OlderThan != "" {
				if _, err := contract.ParseAge(req.OlderThan); err != nil {
					return usageErr("--older-than: %v", err)
				}
			}
			if req.Database != "" && req.Tenant == "" {
				return usageErr("--database needs --tenant")
			}
			req.Envelope = contract.NewEnvelope(contract.TypeCleanupRequest)
			req.Actor = a.actor
			nc, err := a.connect()
			if err != nil {
				return err
			}
			defer nc.Close()
			var rep contract.CleanupReport
			if err := a.request(cmd.Context(), nc, a.subj.API("snapshot", "cleanup"), &req, &rep, max(a.timeout, 10*time.Minute)); err != nil {
				return err
			}
			if a.json {
				if err := a.printJSON(rep); err != nil {
					return err
				}
			} else {
				printCleanup(a.stdout, &rep)
			}
			if len(rep.Failed) > 0 {
				return fmt.Errorf("%d expired snapshots could not be deleted (see FAILED); run cleanup again", len(rep.Failed))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&req.DryRun, "dry-run", false, "list what would be deleted and why the others are kept; delete nothing")
	f.StringVar(&req.OlderThan, "older-than", "", "delete snapshots older than this instead of the snapshotter's period: 72h, 7d, 1d12h")
	f.StringVar(&req.Tenant, "tenant", "", "only snapshots of this tenant")
	f.StringVar(&req.Database, "database", "", "only snapshots of this database (with --tenant)")
	f.StringVar(&req.Reason, "reason", "", "why, recorded in the audit trail")
	return cmd
}

// printCleanup writes a retention report as tables: deleted (or, in a dry
// run, to delete), failed, kept.
func printCleanup(w io.Writer, r *contract.CleanupReport) {
	scope := "all databases"
	if r.Tenant != "" {
		scope = "tenant " + r.Tenant
		if r.Database != "" {
			scope = r.Tenant + "/" + r.Database
		}
	}
	verb := "Deleted"
	if r.DryRun {
		verb = "Would delete"
		fmt.Fprintln(w, "Dry run: nothing was deleted.")
	}
	fmt.Fprintf(w, "Retention run %s on %s: %s, snapshots started before %s (older than %s)\n",
		r.RunID, r.Instance, scope, r.Cutoff.UTC().Format(time.RFC3339), r.OlderThan)
	table := func(title string, items []contract.CleanupItem, last string, cell func(contract.CleanupItem) string) {
		fmt.Fprintf(w, "\n%s (%d)\n", title, len(items))
		if len(items) == 0 {
			fmt.Fprintln(w, "  none")
			return
		}
		t := newTable("  ", "ID", "NAME", "DATABASE", "STARTED", "AGE", "SIZE", last)
		for _, it := range items {
			t.row(it.SnapshotID, it.Name, it.Tenant+"/"+it.Database,
				it.StartedAt.UTC().Format(time.RFC3339), it.Age, sizeText(it.Size), cell(it))
		}
		t.print(w)
	}
	table(verb, r.Deleted, "NOTE", func(it contract.CleanupItem) string {
		if it.Error != "" {
			return it.Error
		}
		return "-"
	})
	if len(r.Failed) > 0 {
		table("Failed, still there", r.Failed, "ERROR", func(it contract.CleanupItem) string { return it.Error })
	}
	table("Kept", r.Kept, "WHY", func(it contract.CleanupItem) string { return it.Reason + ": " + it.Detail })
	if r.DryRun {
		fmt.Fprintf(w, "\n%d to delete, %d kept; would free %d bytes\n", len(r.Deleted), len(r.Kept), r.BytesFreed)
	} else {
		fmt.Fprintf(w, "\n%d deleted, %d kept, %d failed; freed %d bytes\n", len(r.Deleted), len(r.Kept), len(r.Failed), r.BytesFreed)
	}
	if r.StatePruned != nil {
		verb := "Pruned"
		if r.DryRun {
			verb = "Would prune"
		}
		fmt.Fprintf(w, "%s the records of work that ended before the cutoff: %d operations, %d migrations, %d retention claims\n", verb,
			r.StatePruned["operations"], r.StatePruned["migrations"], r.StatePruned["retention_claims"])
	}
	if len(r.Abandoned) > 0 {
		verb := "Failed"
		if r.DryRun {
			verb = "Would fail"
		}
		fmt.Fprintf(w, "%s the operations that no worker can end, their commands gone from CHROMA_CMDS: %s\n", verb, strings.Join(r.Abandoned, ", "))
	}
}
