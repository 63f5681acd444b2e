package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/bus"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/mattn/go-runewidth"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
)

func (a *app) snapshotCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "snapshot", Short: "Create, verify, list, inspect, pin, delete, export and import snapshots",
		Args: cobra.ArbitraryArgs, RunE: groupRunE}
	cmd.AddCommand(a.snapshotCreateCmd(), a.snapshotVerifyCmd(), a.snapshotListCmd(), a.snapshotInfoCmd(),
		a.snapshotDeleteCmd(), a.snapshotExportCmd(), a.snapshotImportCmd(), a.snapshotKeepCmd())
	return cmd
}

func (a *app) snapshotCreateCmd() *cobra.Command {
	var req contract.SnapshotCreateRequest
	var collections []string
	var noWait bool
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "create --name NAME",
		Short: "Snapshot a tenant/database (or some collections) into the object store",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := contract.ValidateSnapshotName(req.Name); err != nil {
				return usageErr("--name: %v", err)
			}
			req.Collections = splitList(collections...)
			// An empty --collections (an unset shell variable, say) would
			// otherwise snapshot the whole database.
			if cmd.Flags().Changed("collections") && len(req.Collections) == 0 {
				return usageErr("--collections %q names no collection: give a,b, or leave the flag out to snapshot the whole database", strings.Join(collections, ","))
			}
			req.Envelope = contract.NewEnvelope(contract.TypeSnapshotCreateRequest)
			req.Actor = a.actor
			nc, err := a.connect()
			if err != nil {
				return err
			}
			defer nc.Close()
			ctx := cmd.Context()
			var reply contract.SnapshotCreateReply
			if err := a.request(ctx, nc, a.subj.API("snapshot", "create"), &req, &reply, 0); err != nil {
				return err
			}
			for _, w := range reply.Warnings {
				fmt.Fprintln(a.stderr, "warning:", w)
			}
			if noWait {
				if a.json {
					return a.printJSON(reply)
				}
				fmt.Fprintln(a.stdout, reply.SnapshotID)
				return nil
			}
			op, err := a.waitOperation(ctx, nc, reply.OpID, wait, fmt.Sprintf("`chromadb-rollback snapshot info %s` says how it ended", reply.SnapshotID))
			if err != nil {
				return err
			}
			if op.Status != contract.StatusCompleted {
				// As rollback does: with --json a script reads how it
				// ended (status, error) from stdout, not from nothing.
				if a.json {
					if err := a.printJSON(op); err != nil {
						return err
					}
				}
				return fmt.Errorf("snapshot %s failed: %s", reply.SnapshotID, op.Error)
			}
			var m contract.SnapshotManifest
			if err := a.request(ctx, nc, a.subj.API("snapshot", "info"), contract.SnapshotRef{Snapshot: reply.SnapshotID}, &m, 0); err != nil {
				return err
			}
			if !m.Consistent {
				fmt.Fprintf(a.stderr, "warning: snapshot %s is not consistent: %s\n", m.SnapshotID, m.Inconsistency)
			}
			if a.json {
				return a.printJSON(m)
			}
			fmt.Fprintln(a.stdout, m.SnapshotID)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Name, "name", "", "human name, e.g. pre_migration_2025-11-30 (required)")
	f.StringVar(&req.Tenant, "tenant", envOr("CHROMA_TENANT", "default_tenant"), "Chroma tenant (env CHROMA_TENANT)")
	f.StringVar(&req.Database, "database", envOr("CHROMA_DATABASE", "default_database"), "Chroma database (env CHROMA_DATABASE)")
	// Repeatable, as rollback's --failed-collections: given twice, a
	// string flag kept only its last value, and the snapshot held less
	// than was asked.
	f.StringArrayVar(&collections, "collections", nil, "comma-separated collection names (default: all; repeatable)")
	f.StringVar(&req.Reason, "reason", "", "why, recorded in the audit trail")
	f.BoolVar(&req.Keep, "keep", false, "pin the snapshot: retention never deletes it (undo with snapshot keep ID --off)")
	f.BoolVar(&noWait, "no-wait", false, "print the snapshot id once queued, without waiting")
	f.DurationVar(&wait, "wait-timeout", 6*time.Hour, "give up waiting after this long (the snapshot goes on)")
	return cmd
}

// waitOperation follows an operation's status in the state bucket until it
// ends, drawing a progress bar from its progress subject on a terminal.
// follow says how to follow the operation once the wait stops before it
// ended (interrupted, --wait-timeout, or NATS gone): it goes on in the
// services.
func (a *app) waitOperation(ctx context.Context, nc *nats.Conn, opID string, limit time.Duration, follow string) (*contract.Operation, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	kv, err := js.KeyValue(ctx, contract.BucketState)
	if err != nil {
		return nil, fmt.Errorf("open state bucket: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()

	defer a.opBar(nc, opID)()

	w, err := kv.Watch(ctx, contract.OperationKey(opID))
	if err != nil {
		return nil, fmt.Errorf("watch operation %s: %w", opID, err)
	}
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			why := "interrupted"
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				why = fmt.Sprintf("not ended after %v (--wait-timeout)", limit)
			}
			return nil, fmt.Errorf("stopped waiting for operation %s: %s; it goes on in the services: %s", opID, why, follow)
		case e := <-a.connEvents:
			fmt.Fprintln(a.stderr, e.text("The operation goes on in the services."))
		case e, ok := <-w.Updates():
			if !ok { // the watch ended with the connection
				why := ""
				if err := nc.LastError(); err != nil {
					why = fmt.Sprintf(" (%v)", err)
				}
				return nil, fmt.Errorf("stopped waiting for operation %s: the connection to NATS is closed%s; it goes on in the services: %s", opID, why, follow)
			}
			if e == nil {
				continue // initial values delivered
			}
			var op contract.Operation
			if json.Unmarshal(e.Value(), &op) != nil {
				continue
			}
			if contract.Ended(op.Status) { // a rollback may also be cancelled
				return &op, nil
			}
		}
	}
}

// archiveSizeText is a snapshot's size as stored, exact in bytes, and as
// the archive was before compression when known (not for some imports).
func archiveSizeText(size, raw int64) string {
	out := fmt.Sprintf("%s (%d bytes)", sizeText(size), size)
	if raw > 0 {
		out += fmt.Sprintf(", %s before compression", sizeText(raw))
	}
	return out
}

// barLabel is the progress bar's description: the phase and collection,
// then the rate and time left as the service measured them, once it has
// (the bar's own rate read "0 records/hr" until the first records were
// done, and its own estimate started with the bar, not the work).
func barLabel(p contract.Progress) string {
	out := strings.TrimSpace(p.Phase + " " + p.Collection)
	if p.RatePerSec > 0 {
		out += fmt.Sprintf(", %.0f records/s", p.RatePerSec)
	}
	if p.ETASeconds >= 1 {
		out += fmt.Sprintf(", about %s left", roundDuration(p.ETASeconds))
	}
	return out
}

func (a *app) snapshotRefCmd(use, short, verb string, print func(data []byte) error, set ...func(*contract.SnapshotRef)) *cobra.Command {
	return &cobra.Command{
		Use:   use + " SNAPSHOT",
		Short: short,
		Args:  oneArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			nc, err := a.connect()
			if err != nil {
				return err
			}
			defer nc.Close()
			var raw json.RawMessage
			timeout := a.timeout
			if verb == "verify" {
				timeout = max(timeout, time.Hour)
			}
			ref := contract.SnapshotRef{Envelope: contract.NewEnvelope(contract.TypeSnapshotRef), Snapshot: args[0], Actor: a.actor}
			for _, f := range set {
				f(&ref)
			}
			err = a.request(cmd.Context(), nc, a.subj.API("snapshot", verb), ref, &raw, timeout)
			if err != nil {
				return err
			}
			if a.json {
				return a.printJSON(raw)
			}
			return print(raw)
		},
	}
}

func (a *app) snapshotVerifyCmd() *cobra.Command {
	return a.snapshotRefCmd("verify", "Check a snapshot's archive against its manifest, byte for byte", "verify", func(data []byte) error {
		var rep contract.VerifyReport
		if err := json.Unmarshal(data, &rep); err != nil {
			return err
		}
		if rep.ContentUnchecked != "" {
			fmt.Fprintf(a.stdout, "OK (ciphertext only): snapshot %s: encrypted archive present, %d bytes, sha256 %s as stored\n", rep.SnapshotID, rep.Size, rep.SHA256)
			fmt.Fprintln(a.stderr, "warning:", rep.ContentUnchecked)
			return nil
		}
		fmt.Fprintf(a.stdout, "OK: snapshot %s verified: %s in %s, %d bytes, sha256 %s\n",
			rep.SnapshotID, counted(rep.TotalRecords, "record"), counted(len(rep.Collections), "collection"), rep.Size, rep.SHA256)
		return nil
	})
}

func (a *app) snapshotInfoCmd() *cobra.Command {
	return a.snapshotRefCmd("info", "Show a snapshot's manifest: collections, counts and batches", "info", func(data []byte) error {
		var m contract.SnapshotManifest
		if err := json.Unmarshal(data, &m); err != nil {
			return err
		}
		t := newTable("")
		consistent := strconv.FormatBool(m.Consistent)
		if m.Inconsistency != "" {
			consistent += " (" + m.Inconsistency + ")"
		}
		t.row("id:", m.SnapshotID)
		t.row("name:", m.Name)
		t.row("source:", fmt.Sprintf("%s/%s (Chroma %s)", m.Tenant, m.Database, m.ChromaVersion))
		t.row("created:", m.StartedAt.Format(time.RFC3339))
		t.row("records:", m.TotalRecords)
		t.row("size:", archiveSizeText(m.Size, m.RawBytes))
		t.row("sha256:", m.SHA256)
		t.row("consistent:", consistent)
		t.row("keep:", m.Keep)
		if m.Encryption != "" {
			t.row("encryption:", m.Encryption+" to "+strings.Join(m.Recipients, ", "))
		}
		if o := m.ImportedFrom; o != nil {
			t.row("imported:", importedText(&m))
		}
		for _, l := range provenance(&m) {
			t.row(l[0]+":", l[1])
		}
		if err := t.print(a.stdout); err != nil {
			return err
		}
		fmt.Fprintln(a.stdout, "\ncollections:")
		t = newTable("", "NAME", "ID", "RECORDS", "BATCHES", "DIGEST")
		for _, c := range m.Collections {
			t.row(c.Name, c.ID, c.Count, batchRange(c.Batches), fmt.Sprintf("%.16s", c.ContentDigest))
		}
		if err := t.print(a.stdout); err != nil {
			return err
		}
		return a.printBatchRecords(&m)
	})
}

// printBatchRecords lists, per collection, each batch with its records and
// its first and last record id (get order, which is insertion order), so
// that an operator can tell which batches a batch-level rollback must name.
func (a *app) printBatchRecords(m *contract.SnapshotManifest) error {
	unrecorded := false
	for _, c := range m.Collections {
		if len(c.Batches) == 0 {
			continue
		}
		if len(c.BatchRecords) != len(c.Batches) {
			unrecorded = true
			continue
		}
		fmt.Fprintf(a.stdout, "\nbatches of %s (records in insertion order):\n", c.Name)
		t := newTable("  ", "BATCH", "RECORDS", "FIRST ID", "LAST ID")
		for i, b := range c.BatchRecords {
			t.row(c.Batches[i], b.Count, shortID(b.First), shortID(b.Last))
		}
		if err := t.print(a.stdout); err != nil {
			return err
		}
	}
	if unrecorded {
		fmt.Fprintf(a.stdout, "\nbatches: the records of each batch and their ids are not recorded in this snapshot's manifest (it was written before they were); "+
			"`chromadb-rollback rollback %s --dry-run --batches COLLECTION:BATCH,...` shows the records of the batches it names\n", m.SnapshotID)
	}
	return nil
}

// idWidth is the most terminal columns a record id takes in a table (a
// CJK character takes two).
const idWidth = 24

// shortID is a record id for a table cell: in Go quotes when it is empty or
// holds characters a terminal does not show as themselves (ids may hold
// any Unicode, NUL and newlines included), and cut in the middle with "…"
// when wider than idWidth columns, so that ids that share a long prefix
// stay told apart by their ends. --json has the ids whole.
func shortID(id string) string {
	if id == "" || strings.ContainsFunc(id, func(r rune) bool { return !unicode.IsPrint(r) }) {
		id = strconv.Quote(id)
	}
	if runewidth.StringWidth(id) <= idWidth {
		return id
	}
	tail := (idWidth - 1) / 2
	head := runewidth.Truncate(id, idWidth-1-tail, "")
	start, width := len(id), 0
	for start > 0 {
		r, n := utf8.DecodeLastRuneInString(id[:start])
		if width+runewidth.RuneWidth(r) > tail {
			break
		}
		width += runewidth.RuneWidth(r)
		start -= n
	}
	return head + "…" + id[start:]
}

// provenance is what a snapshot holds of its database, who took it and
// why (a safety snapshot names its rollback), as "snapshot info" lines.
func provenance(m *contract.SnapshotManifest) [][2]string {
	scope := "the whole database"
	if m.Partial {
		scope = "only the collections below (partial)"
	}
	out := [][2]string{{"holds", scope}}
	if m.Actor != "" {
		out = append(out, [2]string{"taken by", m.Actor})
	}
	if m.Reason != "" {
		out = append(out, [2]string{"reason", m.Reason})
	}
	return out
}

// importedText says where an imported snapshot came from, and when its
// original was taken when the file said (which dates it as the newest of
// its database, in status and retention).
func importedText(m *contract.SnapshotManifest) string {
	o := m.ImportedFrom
	text := fmt.Sprintf("%s (%s format, sha256 %.16s)", o.File, o.Format, o.SHA256)
	var orig []string
	if o.SourceSnapshotID != "" {
		orig = append(orig, o.SourceSnapshotID)
	}
	if o.SourceName != "" {
		orig = append(orig, fmt.Sprintf("%q", o.SourceName))
	}
	switch src := o.SourceCreatedAt; {
	case src == nil || src.IsZero():
		orig = append(orig, "taken at an unknown time (dated by its import)")
	case !m.TakenAt().Equal(*src):
		orig = append(orig, "dated "+src.UTC().Format(time.RFC3339)+", after its import (dated by its import)")
	default:
		orig = append(orig, "taken "+src.UTC().Format(time.RFC3339))
	}
	return text + "; original " + strings.Join(orig, ", ")
}

func batchRange(b []string) string {
	switch len(b) {
	case 0:
		return "-"
	case 1:
		return b[0]
	}
	return fmt.Sprintf("%s..%s (%d)", b[0], b[len(b)-1], len(b))
}

func (a *app) snapshotDeleteCmd() *cobra.Command {
	var force bool
	cmd := a.snapshotRefCmd("delete", "Delete a snapshot (manifest and archive); a pinned or in-use one only with --force", "delete", func(data []byte) error {
		var m contract.SnapshotManifest
		if err := json.Unmarshal(data, &m); err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, "deleted snapshot %s (%s)\n", m.SnapshotID, m.Name)
		return nil
	}, func(ref *contract.SnapshotRef) { ref.Force = force })
	cmd.Flags().BoolVar(&force, "force", false, "delete even a pinned snapshot or one a running migration or rollback uses")
	return cmd
}

func (a *app) snapshotKeepCmd() *cobra.Command {
	var off bool
	var reason string
	cmd := &cobra.Command{
		Use:   "keep SNAPSHOT [--off]",
		Short: "Pin a snapshot so that retention never deletes it (--off unpins it)",
		Args:  oneArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			nc, err := a.connect()
			if err != nil {
				return err
			}
			defer nc.Close()
			keep := !off
			req := contract.SnapshotKeepRequest{Envelope: contract.NewEnvelope(contract.TypeKeepRequest), Snapshot: args[0], Keep: &keep, Actor: a.actor, Reason: reason}
			var m contract.SnapshotManifest
			if err := a.request(cmd.Context(), nc, a.subj.API("snapshot", "keep"), req, &m, 0); err != nil {
				return err
			}
			if a.json {
				return a.printJSON(m)
			}
			if m.Keep {
				fmt.Fprintf(a.stdout, "snapshot %s (%s) is kept: retention never deletes it\n", m.SnapshotID, m.Name)
			} else {
				fmt.Fprintf(a.stdout, "snapshot %s (%s) is no longer pinned: retention deletes it once expired, unless something else keeps it\n", m.SnapshotID, m.Name)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&off, "off", false, "unpin the snapshot")
	cmd.Flags().StringVar(&reason, "reason", "", "why, recorded in the audit trail")
	return cmd
}

func (a *app) snapshotListCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List snapshots, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			nc, err := a.connect()
			if err != nil {
				return err
			}
			defer nc.Close()
			list, err := a.listSnapshots(cmd.Context(), nc)
			if err != nil {
				return err
			}
			if list.Snapshots == nil {
				list.Snapshots = []contract.SnapshotManifest{}
			}
			if a.json {
				return a.printJSON(list)
			}
			t := newTable("", "ID", "NAME", "SOURCE", "CREATED", "RECORDS", "SIZE", "CONSISTENT", "KEEP")
			for _, m := range list.Snapshots {
				t.row(m.SnapshotID, m.Name, m.Tenant+"/"+m.Database,
					m.StartedAt.Format(time.RFC3339), m.TotalRecords, sizeText(m.Size), m.Consistent, m.Keep)
			}
			if err := t.print(a.stdout); err != nil {
				return err
			}
			for _, id := range list.ArchivesMissing {
				fmt.Fprintf(a.stderr, "warning: the archive of snapshot %s is missing from %s (deleted or lost outside chromadb-rollback): it cannot be restored; `snapshot verify %s` shows it, `snapshot delete %s` removes its manifest\n",
					id, contract.ObjectSnapshots, id, id)
			}
			return nil
		},
	}
}

// listSnapshots reads every page of chroma.api.snapshot.list: a page holds
// what fits in one NATS message; the next one starts where it ended.
func (a *app) listSnapshots(ctx context.Context, nc *nats.Conn) (contract.SnapshotList, error) {
	var list contract.SnapshotList
	req := contract.SnapshotListRequest{Envelope: contract.NewEnvelope("chromadb-rollback.v1.snapshot_list_request")}
	for {
		var page contract.SnapshotList
		if err := a.request(ctx, nc, a.subj.API("snapshot", "list"), req, &page, 0); err != nil {
			return list, err
		}
		if req.After == "" {
			list.Envelope = page.Envelope
		}
		list.Snapshots = append(list.Snapshots, page.Snapshots...)
		list.ArchivesMissing = append(list.ArchivesMissing, page.ArchivesMissing...)
		if !page.More || page.NextAfter == "" || len(page.Snapshots) == 0 {
			return list, nil
		}
		req.After = page.NextAfter
	}
}

func (a *app) snapshotExportCmd() *cobra.Command {
	var out string
	var force bool
	cmd := &cobra.Command{
		Use:   "export SNAPSHOT -o FILE [--force]",
		Short: "Copy a snapshot's archive to a file, checking its SHA-256",
		Args:  oneArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return usageErr("-o FILE is required")
			}
			// A file is only put in place once its checksum matched; what
			// went to stdout could not be taken back from whatever read it.
			if out == "-" {
				return usageErr("-o - (stdout) is not supported: an export is checked against the snapshot's SHA-256 before its file is in place, which a pipe cannot wait for; give a file name")
			}
			// An existing file may be an earlier export, the only copy of
			// a snapshot retention has deleted since.
			if fi, err := os.Stat(out); err == nil {
				if fi.IsDir() {
					return usageErr("-o %s is a directory: give a file name", out)
				}
				if !force {
					return usageErr("-o %s exists: give another name, or --force to replace it", out)
				}
			}
			// Said before the archive is read, and in the operator's
			// words: the file written first is FILE.*.partial beside it.
			if dir := filepath.Dir(out); dir != "" {
				if fi, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) || (err == nil && !fi.IsDir()) {
					return usageErr("-o %s: the directory %s does not exist: create it, or give another path", out, dir)
				}
			}
			nc, err := a.connect()
			if err != nil {
				return err
			}
			defer nc.Close()
			ctx := cmd.Context()
			var m contract.SnapshotManifest
			if err := a.request(ctx, nc, a.subj.API("snapshot", "info"), contract.SnapshotRef{Snapshot: args[0]}, &m, 0); err != nil {
				return err
			}
			n, err := a.exportObject(ctx, nc, &m, out, force)
			if err != nil {
				return err
			}
			if a.json {
				return a.printJSON(map[string]any{"snapshot_id": m.SnapshotID, "file": out, "bytes": n, "sha256": m.SHA256})
			}
			fmt.Fprintf(a.stdout, "exported %s to %s (%d bytes, sha256 %s)\n", m.SnapshotID, out, n, m.SHA256)
			if m.Encryption != "" {
				fmt.Fprintf(a.stdout, "the archive is encrypted with %s to %s, as stored: `age -d -i KEY_FILE` decrypts it\n", m.Encryption, strings.Join(m.Recipients, ", "))
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "file to write (written beside it as FILE.*.partial, moved into place when complete and checked)")
	cmd.Flags().BoolVar(&force, "force", false, "replace FILE when it exists")
	return cmd
}

// exportObject streams the archive into a temporary file beside out, checks
// size and SHA-256 against the manifest, then moves it into place: never
// over an existing file unless replace.
func (a *app) exportObject(ctx context.Context, nc *nats.Conn, m *contract.SnapshotManifest, out string, replace bool) (int64, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return 0, err
	}
	store, err := js.ObjectStore(ctx, contract.ObjectSnapshots)
	if err != nil {
		return 0, fmt.Errorf("open object store: %w", err)
	}
	// Chunk by chunk with a bounded wait for each, rather than hanging
	// through a leader election.
	obs := bus.RetryObjectStore(js, contract.ObjectSnapshots, store)
	ctx, cancel := bus.ObjectReadContext(ctx)
	defer cancel()
	r, err := obs.Get(ctx, m.Object)
	if bus.IsNotFound(err) {
		// A missing archive, as snapshot verify and rollback report one
		// (exit 3), saying what is left to do, not "object not found".
		return 0, &exitError{code: exitVerification, err: fmt.Errorf("the archive of snapshot %s, %s, is missing from %s (deleted or lost outside chromadb-rollback): there is nothing to export, and it cannot be restored; `snapshot delete %s` removes its manifest",
			m.SnapshotID, m.Object, contract.ObjectSnapshots, m.SnapshotID)}
	}
	if err != nil {
		return 0, fmt.Errorf("open archive %s: %w", m.Object, err)
	}
	defer r.Close()
	// A file of its own: another export to the same name cannot write
	// into it.
	f, err := os.CreateTemp(filepath.Dir(out), filepath.Base(out)+".*.partial")
	if err != nil {
		return 0, err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return 0, err
	}
	h := sha256.New()
	bar, done := a.bytesBar("exporting "+m.Object, m.Size)
	n, err := io.Copy(io.MultiWriter(f, h, bar), r)
	done()
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return n, fmt.Errorf("export %s: %w", m.Object, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != m.SHA256 || n != m.Size {
		return n, &exitError{code: exitVerification, err: fmt.Errorf("export %s: got %d bytes with sha256 %s, manifest says %d bytes with %s", m.Object, n, got, m.Size, m.SHA256)}
	}
	if err := placeFile(tmp, out, replace); err != nil {
		return n, fmt.Errorf("export %s: %w", m.Object, err)
	}
	return n, syncDir(filepath.Dir(out))
}

// placeFile moves tmp to out; unless replace, never over a file that
// exists, also one made while the export ran. A hard link refuses an
// existing name atomically; where the file system has none (some network
// and FUSE mounts), a check just before the rename stands in.
func placeFile(tmp, out string, replace bool) error {
	if replace {
		return os.Rename(tmp, out)
	}
	exists := fmt.Errorf("%s was created meanwhile; it is left as it is (--force replaces it)", out)
	err := os.Link(tmp, out)
	switch {
	case err == nil:
		return nil // the caller removes tmp
	case errors.Is(err, os.ErrExist):
		return exists
	}
	if _, err := os.Lstat(out); err == nil {
		return exists
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return os.Rename(tmp, out)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
