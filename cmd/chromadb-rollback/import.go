package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/bus"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/crypt"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/legacy"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
)

// maxManifestBytes keeps the manifest, base64 in the JSON request, under
// contract.MaxRequestBytes.
const maxManifestBytes = 40 << 10

func (a *app) snapshotImportCmd() *cobra.Command {
	var req contract.SnapshotImportRequest
	var manifestPath string
	var noManifest bool
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "import FILE",
		Short: "Import an archive: the old tool's .tar.gz (checked against its manifest) or an exported .tar.zst",
		Long: `Import an archive file as a new snapshot that verifies and restores like any other.

FILE is either the old Python tool's archive (snapshots/<id>.tar.gz holding
collections.json and metadata.json) or a native archive written by
'snapshot export'. The old tool kept a manifest JSON with the archive's SHA-256
beside it (manifests/<id>.json): give it with --manifest, or it is found
next to FILE (<id>.json), in ../manifests/<id>.json or in manifests/<id>.json; the checksum and the
counts must then agree. Old archives have no tenant or database: they go to
--tenant/--database (default_tenant/default_database unless given). A native
archive encrypted with age (the export of an encrypted snapshot) is decrypted
by the snapshotter with its --age-identity-file, and refused when it has none.

The file is uploaded to the object store under a staging name, converted
and verified by the snapshotter, and the staging object is removed. The new
snapshot id is printed.`,
		Args: oneArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			file := args[0]
			if req.Name != "" {
				if err := contract.ValidateSnapshotName(req.Name); err != nil {
					return usageErr("--name: %v", err)
				}
			}
			for flag, v := range map[string]string{"tenant": req.Tenant, "database": req.Database} {
				if v != "" {
					if err := contract.ValidateChromaName(flag, v); err != nil {
						return usageErr("--%s: %v", flag, err)
					}
				}
			}
			if noManifest && manifestPath != "" {
				return usageErr("--manifest and --no-manifest contradict each other")
			}
			f, err := os.Open(file)
			if err != nil {
				return err
			}
			defer f.Close()
			head := make([]byte, legacy.SniffLen)
			n, err := io.ReadFull(f, head)
			if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
				return fmt.Errorf("read %s: %w", file, err)
			}
			// An age-encrypted archive is decrypted by the snapshotter, with
			// its identity, or refused there.
			format := legacy.FormatNative
			if !crypt.IsEncrypted(head[:n]) {
				if format, err = legacy.Sniff(head[:n]); err != nil {
					return &exitError{code: exitVerification, err: fmt.Errorf("%s: %w", file, err)}
				}
			}
			if _, err := f.Seek(0, io.SeekStart); err != nil {
				return err
			}
			if manifestPath == "" && !noManifest && format == legacy.FormatSeed {
				manifestPath = findSeedManifest(file)
				if manifestPath != "" {
					fmt.Fprintf(a.stderr, "using manifest %s (--no-manifest to skip it)\n", manifestPath)
				}
			}
			if manifestPath != "" {
				data, err := readSmall(manifestPath, maxManifestBytes)
				if err != nil {
					return usageErr("--manifest: %v", err)
				}
				if _, err := legacy.ParseManifest(data); err != nil {
					return usageErr("--manifest %s: %v", manifestPath, err)
				}
				req.Manifest = data
			} else if format == legacy.FormatSeed {
				fmt.Fprintln(a.stderr, "warning: no manifest: the archive's checksum cannot be checked (give --manifest)")
			}

			nc, err := a.connect()
			if err != nil {
				return err
			}
			defer nc.Close()
			ctx := cmd.Context()
			js, err := jetstream.New(nc)
			if err != nil {
				return err
			}
			obs, err := js.ObjectStore(ctx, contract.ObjectSnapshots)
			if err != nil {
				return fmt.Errorf("open object store %s: %w (is `chromadb-rollback serve` running?)", contract.ObjectSnapshots, err)
			}
			staging := contract.ImportStagingPrefix + contract.NewID("")
			// Whatever happens from here, the staging object goes, unless
			// the conversion may still be reading it (keepStaging): the
			// snapshotter removes it when it ends, retention a day later
			// when it died.
			keepStaging := false
			defer func() {
				if keepStaging {
					return
				}
				dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				if err := obs.Delete(dctx, staging); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
					fmt.Fprintf(a.stderr, "warning: could not remove the staging object %s: %v\n", staging, err)
				}
			}()
			// Read back as it is stored: the service converts what was
			// stored, so the upload must be the file. Its chunks go under an
			// id derived from the name: retention purges them if this
			// process is killed before the upload ends.
			var size int64
			if st, err := f.Stat(); err == nil {
				size = st.Size()
			}
			bar, uploaded := a.bytesBar("uploading "+filepath.Base(file), size)
			_, err = bus.PutObject(ctx, js, contract.ObjectSnapshots, jetstream.ObjectMeta{Name: staging, Description: "import staging: " + filepath.Base(file)},
				io.TeeReader(f, bar), bus.WithChunkID(bus.ChunkIDFor(staging)))
			uploaded()
			if err != nil {
				return fmt.Errorf("upload %s: %w", file, err)
			}

			req.Envelope = contract.NewEnvelope(contract.TypeImportRequest)
			req.Object = staging
			req.FileName = filepath.Base(file)
			req.Actor = a.actor
			// Its own operation id, so its progress can be followed while
			// the snapshotter converts and verifies it.
			req.OpID = contract.NewID("op_")
			var m contract.SnapshotManifest
			converted := a.opBar(nc, req.OpID)
			err = a.awaitImport(ctx, nc, &req, &m, max(a.timeout, wait))
			converted()
			if errors.Is(err, errImportUnanswered) {
				keepStaging = true
				return err
			}
			// Interrupted (Ctrl-C) or out of time once the request was
			// sent: a snapshotter may be converting the upload. Removing
			// it from under the conversion failed the import, after a 30 s
			// stall, or not, depending on how far it had read; so it stays,
			// for the snapshotter to remove when the import ends (retention
			// a day later if none took the request), as a snapshot create
			// that stops waiting leaves the snapshot to go on.
			if errors.Is(err, errNoAnswer) {
				keepStaging = true
				return fmt.Errorf("%w\nThe import may still run (operation %s): `chromadb-rollback audit-log --op %s` says how it ended (snapshot.import completed names the new snapshot); the snapshotter removes the upload, %s in %s, when it ends",
					err, req.OpID, req.OpID, staging, contract.ObjectSnapshots)
			}
			if err != nil {
				var ae *apiError
				if errors.As(err, &ae) {
					switch ae.Code {
					case contract.CodeTooLarge: // a 422 exits as a failed verification in any command
						return &exitError{code: exitVerification, err: err}
					case contract.CodeBadRequest:
						return &exitError{code: exitUsage, err: err}
					}
				}
				return err
			}
			if m.ImportedFrom != nil {
				for _, w := range m.ImportedFrom.Warnings {
					fmt.Fprintln(a.stderr, "warning:", w)
				}
			}
			if a.json {
				return a.printJSON(m)
			}
			fmt.Fprintf(a.stderr, "imported %s as %s (%q): %s in %s of %s/%s, verified\n",
				filepath.Base(file), m.SnapshotID, m.Name, counted(m.TotalRecords, "record"), counted(len(m.Collections), "collection"), m.Tenant, m.Database)
			fmt.Fprintln(a.stdout, m.SnapshotID)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&manifestPath, "manifest", "", "the old tool's manifest JSON for FILE (default: found beside FILE, in ../manifests or in manifests)")
	f.BoolVar(&noManifest, "no-manifest", false, "do not look for a manifest")
	f.StringVar(&req.Name, "name", "", "snapshot name (default: the manifest's, the archive's, or FILE's name)")
	f.StringVar(&req.Tenant, "tenant", "", "tenant the snapshot belongs to (old archives: default_tenant; native: its own)")
	f.StringVar(&req.Database, "database", "", "database the snapshot belongs to (old archives: default_database; native: its own)")
	f.StringVar(&req.Reason, "reason", "", "why, recorded in the audit trail")
	f.DurationVar(&wait, "wait-timeout", 2*time.Hour, "how long to wait for the conversion (it goes on after that)")
	return cmd
}

// importStall is how long an import waits, once the connection to NATS
// came back after it was lost, for a sign that a snapshotter still converts
// the file: a progress message of the import, or its reply.
var importStall = 30 * time.Second

// errImportUnanswered: the import's reply can no longer be expected.
var errImportUnanswered = errors.New("no answer to the import")

// awaitImport sends the import request and waits for its one reply. While
// the connection to NATS is lost, a reply is lost with it, and the lost
// connection is often the snapshotter's own end (serve, which embeds NATS
// and the snapshotter, killed or restarted): nobody answers any more. So
// once the connection came back, it waits on only while the import shows
// progress (a progress message at least every importStall); else it stops,
// saying that the outcome is unknown and where to read it, rather than
// waiting silently until --wait-timeout.
func (a *app) awaitImport(ctx context.Context, nc *nats.Conn, req *contract.SnapshotImportRequest, out *contract.SnapshotManifest, timeout time.Duration) error {
	progress := make(chan *nats.Msg, 64)
	sub, err := nc.ChanSubscribe(a.subj.Progress(req.OpID), progress)
	if err != nil {
		return fmt.Errorf("subscribe to the import's progress: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.requestConn(rctx, nc, a.subj.API("snapshot", "import"), req, out, timeout, nil) }()
	var stall *time.Timer
	var stalled <-chan time.Time
	defer func() {
		if stall != nil {
			stall.Stop()
		}
	}()
	for {
		select {
		case err := <-done:
			return err
		case <-progress:
			if stall != nil {
				stall.Reset(importStall)
			}
		case e := <-a.connEvents:
			fmt.Fprintln(a.stderr, e.text("A reply sent meanwhile is lost: once it is back, the import must show progress within "+importStall.String()+"."))
			if !e.lost && stall == nil {
				stall = time.NewTimer(importStall)
				stalled = stall.C
			}
		case <-stalled:
			cancel()
			<-done
			return fmt.Errorf("%w: the connection to NATS was lost while the snapshotter converted %s (operation %s), and no progress came in %v after it was back: the snapshotter that converted it is gone (serve restarted?), or its reply was lost. How it ended: `chromadb-rollback audit-log --op %s` (snapshot.import completed names the new snapshot); if it did not complete, import the file again: the upload it left, %s in %s, goes with retention a day later (`nats obj del %s %s` removes it now)",
				errImportUnanswered, req.FileName, req.OpID, importStall, req.OpID, req.Object, contract.ObjectSnapshots, contract.ObjectSnapshots, req.Object)
		}
	}
}

// findSeedManifest looks for the old tool's manifest of an archive:
// <dir>/<id>.json beside it, or <dir>/../manifests/<id>.json as the tool
// laid them out (snapshots/ and manifests/ side by side).
func findSeedManifest(file string) string {
	base := filepath.Base(file)
	for _, ext := range []string{".tar.gz", ".tgz"} {
		if s, ok := strings.CutSuffix(base, ext); ok {
			base = s
			break
		}
	}
	dir := filepath.Dir(file)
	for _, p := range []string{
		filepath.Join(dir, base+".json"),
		filepath.Join(dir, "..", "manifests", base+".json"),
		filepath.Join(dir, "manifests", base+".json"),
	} {
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p
		}
	}
	return ""
}

func readSmall(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes; a manifest is a small JSON file", path, limit)
	}
	return data, nil
}
