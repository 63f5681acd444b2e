package restorer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/archive"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/record"
)

// How a collection is written.
const (
	writeStage   = "stage"    // into a staging collection, swapped in by renames
	writeInPlace = "in_place" // the target is deleted, recreated and filled
	writeUpsert  = "upsert"   // the named batches' records are replaced in the target
)

// Name separators of the work collections; the op's short id follows.
const (
	stagingSep = "__rb_"
	oldSep     = "__old_"
)

var errAborted = errors.New("collection writer aborted")

// needs reports whether archive collection i still has work to do.
func (j *job) needs(i int) bool {
	if !j.sp.touched(i) {
		return false
	}
	j.mu.Lock() // the first collection is begun while the archive is read
	defer j.mu.Unlock()
	cs := j.ck.Collections[i]
	return cs == nil || cs.Stage != stageDone
}

// restoreAll reads the archive once, in order, and writes each collection
// the plan restores: a collection is finished (verified, and swapped in)
// when the archive moves on to the next one. When the archive was only
// checked before (spec.streamed), this read is its verification: each
// collection is staged and verified as the archive moves on, and swapped
// in only once the whole archive verified at its end, so a damaged archive
// leaves every target as it was.
func (j *job) restoreAll(ctx context.Context) error {
	n := len(j.sp.m.Collections)
	pending, last := false, -1 // last: the last collection with records to write
	for i := range n {
		if j.needs(i) {
			pending = true
			if len(j.sp.m.Collections[i].Batches) > 0 {
				last = i
			}
		}
	}
	if !pending {
		return nil
	}
	j.setPhase(ctx, phaseRestoring)
	var err error
	st := j.sp.takeStream()
	if st == nil {
		if st, err = j.s.openArchive(ctx, j.sp.m); err != nil {
			return err
		}
	}
	defer st.close()
	j.mark = time.Now()

	// The first collection to write is begun (its staging collection made)
	// while its first batch is still being read.
	first := -1
	for i := range n {
		if j.needs(i) {
			first = i
			break
		}
	}
	type begun struct {
		w   *collWriter
		err error
	}
	early := make(chan begun, 1)
	go func() {
		w, err := j.begin(ctx, first)
		early <- begun{w, err}
	}()
	// beginFirst returns what the early begin made, once.
	beginFirst := func() (*collWriter, error) {
		b := <-early
		early = nil
		return b.w, b.err
	}

	cur, batchNo := -1, 0
	var w *collWriter
	// A finished collection's tail verification, checks and swap run in
	// the background while the next collection is written: at most one
	// collection finishes behind the one being written.
	var bg *finishing
	wait := func() error {
		if bg == nil {
			return nil
		}
		<-bg.done
		err := bg.err
		if err == nil {
			j.setFinishing(nil)
			if bg.staged {
				j.addStaged(bg.w)
			}
		}
		bg = nil
		return err
	}
	// held is a written collection whose input is closed. It is finished
	// (drained, then verified and swapped behind the next collection's
	// adds) when the next collection to write begins, or at the end of the
	// archive in the foreground: reading on through collections that are
	// not restored overlaps its last adds.
	var held *collWriter
	finishHeld := func(atEnd bool) error {
		if held == nil {
			return nil
		}
		// The next collection's adds follow this one's, as one
		// collection's follow each other; the rest of its finish
		// overlaps them.
		held.drain()
		if err := wait(); err != nil {
			return err
		}
		if atEnd {
			if err := j.finishLast(ctx, held); err != nil {
				return err
			}
		} else {
			bg = j.finishBehind(ctx, held)
		}
		held = nil
		return nil
	}
	// enter moves on to collection `to` (n: the end of the archive),
	// beginning it when it is restored.
	enter := func(to int) error {
		for cur < to {
			if w != nil {
				w.closeInput()
				held, w = w, nil
			}
			cur++
			batchNo = 0
			if cur == n || j.needs(cur) {
				if err := finishHeld(cur == n); err != nil {
					return err
				}
			}
			if cur < n && j.needs(cur) {
				var nw *collWriter
				var err error
				if cur == first {
					nw, err = beginFirst()
				} else {
					nw, err = j.begin(ctx, cur)
				}
				if err != nil {
					return err
				}
				w = nw
				w.last = cur == last
			}
		}
		return nil
	}
	// failed reports the error of a background finish that ended.
	failed := func() error {
		if bg == nil {
			return nil
		}
		select {
		case <-bg.done:
			return wait()
		default:
			return nil
		}
	}
	for {
		var b *archive.Batch
		b, err = st.next()
		if errors.Is(err, io.EOF) {
			if err = enter(n); err == nil {
				err = wait()
			}
			if err == nil {
				err = j.swapStaged(ctx)
			}
			break
		}
		if err == nil {
			err = enter(b.Collection)
		}
		if err == nil {
			err = failed()
		}
		if err == nil && w != nil && w.wants(batchNo, b.Name) {
			if err = j.checkCancel(ctx); err == nil {
				err = w.submit(batchNo, b.Records)
			}
		}
		batchNo++
		if err != nil {
			break
		}
	}
	if err != nil {
		var unused *collWriter
		if early != nil {
			unused, _ = beginFirst() // the archive failed before its collection
		}
		for _, w := range []*collWriter{w, held, unused} {
			if w != nil {
				w.abort()
			}
		}
		// The collection finishing behind ends as it would have before the
		// next one began: swapped in, or left for cleanup to undo.
		if berr := wait(); berr != nil {
			j.log.Warn("finishing the previous collection failed too", "err", berr)
		}
	}
	return err
}

// finishing is a collection finished in the background.
type finishing struct {
	w      *collWriter
	done   chan struct{}
	err    error
	staged bool // staged, to be swapped in at the end of the archive
}

// finishBehind finishes w (verification of its last batches, checks, and
// the swap unless swaps wait for the end of the archive) in the
// background, then calls the "collection" hook.
func (j *job) finishBehind(ctx context.Context, w *collWriter) *finishing {
	j.mu.Lock()
	if j.current == w {
		j.current = nil
	}
	j.finishing = w
	j.mu.Unlock()
	f := &finishing{w: w, done: make(chan struct{})}
	go func() {
		defer close(f.done)
		f.staged, f.err = j.finishOne(ctx, w, false)
	}()
	return f
}

// finishLast finishes the archive's last collection written, in the
// foreground.
func (j *job) finishLast(ctx context.Context, w *collWriter) error {
	staged, err := j.finishOne(ctx, w, true)
	if err != nil {
		return err
	}
	j.setCurrent(nil)
	if staged {
		j.addStaged(w)
	}
	return nil
}

// finishOne finishes w and calls the "collection" hook after a collection
// this attempt wrote. With a streamed archive a staged collection is not
// swapped in yet (true).
func (j *job) finishOne(ctx context.Context, w *collWriter, phases bool) (bool, error) {
	wrote := w.stage0 == stageWriting
	if j.sp.streamed {
		staged, err := w.stageDone(ctx)
		if err == nil && wrote {
			err = j.s.callHook(ctx, j.hookPoint("collection", w))
		}
		return staged && err == nil, err
	}
	if err := w.finish(ctx, phases); err != nil {
		return false, err
	}
	return false, j.s.callHook(ctx, j.hookPoint("collection", w))
}

// addStaged keeps a staged collection to be swapped in at the end.
func (j *job) addStaged(w *collWriter) {
	j.mu.Lock()
	j.staged = append(j.staged, w)
	j.mu.Unlock()
}

// swapStaged swaps in, in archive order, the collections staged while the
// archive was verified: it ended verified, so they may be.
func (j *job) swapStaged(ctx context.Context) error {
	j.mu.Lock()
	ws := slices.Clone(j.staged)
	j.mu.Unlock()
	if len(ws) == 0 {
		return nil
	}
	j.setPhase(ctx, phaseSwapping)
	for _, w := range ws {
		if err := w.swapIn(ctx, false); err != nil {
			return err
		}
	}
	j.mu.Lock()
	j.staged = nil
	j.mu.Unlock()
	return nil
}

func (j *job) setFinishing(w *collWriter) {
	j.mu.Lock()
	j.finishing = w
	j.mu.Unlock()
}

func (j *job) setCurrent(w *collWriter) {
	j.mu.Lock()
	j.current = w
	j.mu.Unlock()
}

func (j *job) hookPoint(name string, w *collWriter) hookPoint {
	p := hookPoint{Name: name, OpID: j.cmd.OpID, Attempt: j.attempt, Client: j.sp.target, Tenant: j.sp.tenant, Database: j.sp.database}
	if w != nil {
		j.mu.Lock()
		p.Collection, p.Batch, p.WorkID = w.cs.Collection, w.cs.NextBatch, w.cs.WorkID
		j.mu.Unlock()
	}
	return p
}

// saveCheckpoint saves a copy of the checkpoint taken under j.mu.
// Saves are serialized (j.saveMu): the checkpoint is one value holding
// every collection's state, written by the collection being written and
// the one finishing behind it, so a save taken earlier must not land later.
func (j *job) saveCheckpoint(ctx context.Context, change func(ck *checkpoint)) error {
	j.saveMu.Lock()
	defer j.saveMu.Unlock()
	j.mu.Lock()
	if change != nil {
		change(j.ck)
	}
	now := time.Now()
	if !j.mark.IsZero() {
		j.ck.WriteSeconds += now.Sub(j.mark).Seconds()
		j.mark = now
	}
	data := *j.ck
	cols := make(map[int]*collCheckpoint, len(j.ck.Collections))
	for k, v := range j.ck.Collections {
		c := *v
		cols[k] = &c
	}
	data.Collections = cols
	j.mu.Unlock()
	return j.s.saveCheckpoint(ctx, &data)
}

// collWriter writes one collection: adders send batches to Chroma, a
// verifier reads each batch back and compares it with the archive, and
// batches are checkpointed in archive order once verified.
type collWriter struct {
	j    *job
	idx  int
	info archive.CollectionInfo
	want contract.CollectionSummary
	cs   *collCheckpoint
	how  string
	sel  map[string]bool // batch-level: the batches to upsert
	dim  int

	staging, old string
	stage0       string // the collection's stage when the writer started
	from         int    // the first batch still to write

	ctx    context.Context
	cancel context.CancelCauseFunc
	in     chan writeItem
	added  chan writeItem
	adders sync.WaitGroup
	vdone  chan struct{}
	closed bool

	// last: this is the last collection the job writes, so nothing
	// overlaps the read-back of its last batch (see parts).
	last bool
	// submitted: a batch was submitted (the first is encoded ahead).
	submitted bool

	mu    sync.Mutex
	order []int       // batch numbers submitted, in order
	done  map[int]int // record counts verified, by batch number
	// floatsOff: metadata floats Chroma changed within a few ULPs (see
	// maxMetadataULPs), by batch number, until checkpointed.
	floatsOff map[int]int
	left      map[int]int // parts of a submitted batch still to verify
	err       error
}

// writeItem is a batch, or a part of it, to add and verify.
type writeItem struct {
	k int
	b *record.Batch // the part, as archived
	// enc, when not nil, is the whole batch encoded for adding (with zero
	// vectors for null embeddings); the part is its records [from, to).
	enc      *chroma.Encoded
	from, to int
	// tail: the last part of a batch split in two (see parts).
	tail bool
}

// A batch is added in one request, and read back by the verifier while
// the next one is added. The read-back of a collection's last batch
// overlaps the next collection's adds, except for the last collection
// written: there the last batch is added in two parts, its last
// tailParts-th apart, so that reading back the rest overlaps adding the
// tail and only the tail's read-back is left after the last add. Batches
// under splitMin records are not split: their read-back is short.
const (
	tailParts = 8
	splitMin  = 512
)

// parts splits batch k as the writer adds it (see tailParts): the record
// ranges of its parts.
func (w *collWriter) parts(k int, b *record.Batch) [][2]int {
	n := b.Len()
	if !w.last || w.how == writeUpsert || k != len(w.want.Batches)-1 || n < w.j.s.splitMin {
		return [][2]int{{0, n}}
	}
	cut := n - max(n/tailParts, 1)
	return [][2]int{{0, cut}, {cut, n}}
}

// begin prepares the collection written to and starts the writer.
func (j *job) begin(ctx context.Context, i int) (*collWriter, error) {
	sp := j.sp
	j.mu.Lock()
	cs := j.ck.Collections[i]
	if cs == nil {
		cs = &collCheckpoint{Collection: sp.m.Collections[i].Name, Target: sp.names[i], Action: j.ck.Plan.Items[i].Action}
		j.ck.Collections[i] = cs
	}
	j.mu.Unlock()
	w := &collWriter{j: j, idx: i, info: sp.arc.md.Collections[i], want: sp.m.Collections[i], cs: cs,
		staging: workName(cs.Target, stagingSep, j.cmd.OpID), old: workName(cs.Target, oldSep, j.cmd.OpID),
		done: map[int]int{}, floatsOff: map[int]int{}, left: map[int]int{}}
	switch {
	case sp.batches[i] != nil:
		w.how, w.sel = writeUpsert, sp.batches[i]
	case sp.req.InPlace:
		w.how = writeInPlace
	default:
		w.how = writeStage
	}
	if w.info.Dimension != nil {
		w.dim = *w.info.Dimension
	}
	// Current from here: if preparing fails, cleanup removes what it made.
	j.setCurrent(w)
	if cs.Stage == "" || cs.Stage == stageWriting {
		var err error
		switch w.how {
		case writeStage:
			err = w.prepareStaging(ctx)
		case writeInPlace:
			err = w.prepareInPlace(ctx)
		default:
			err = w.prepareUpsert(ctx)
		}
		if err != nil {
			return nil, err
		}
	}
	w.start(ctx)
	return w, nil
}

func (w *collWriter) client() *chroma.Client { return w.j.sp.target }

// get returns a collection by name, nil if there is none.
func (w *collWriter) get(ctx context.Context, name string) (*chroma.Collection, error) {
	return findCollection(ctx, w.client(), w.j.sp.tenant, w.j.sp.database, name)
}

// findCollection gets the collection name of tenant/database from c; nil
// (and no error) when there is none.
func findCollection(ctx context.Context, c *chroma.Client, tenant, database, name string) (*chroma.Collection, error) {
	coll, err := c.GetCollection(ctx, tenant, database, name)
	if errors.Is(err, chroma.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err // names the collection already
	}
	return coll, nil
}

// create makes a collection with the archived configuration, then sets the
// archived metadata by a separate update: created together, hnsw:* keys
// would make Chroma derive the configuration from the metadata.
//
// An archive without a configuration (one imported from the seed tool's
// format) leaves it to Chroma, with the metadata sent on create as the
// original application did, so hnsw:* keys still shape the index.
func (w *collWriter) create(ctx context.Context, name string) (*chroma.Collection, error) {
	cfg := archivedConfig(w.info.Configuration)
	c, err := w.client().CreateCollection(ctx, w.j.sp.tenant, w.j.sp.database, chroma.CreateCollection{
		Name: name, Configuration: cfg, Metadata: w.info.Metadata, GetOrCreate: true, MetadataOnCreate: cfg == nil,
	})
	if err != nil {
		return nil, fmt.Errorf("create collection %q: %w", name, err)
	}
	if len(w.info.Metadata) > 0 && !metadataEqual(c.Metadata, w.info.Metadata) {
		// An earlier attempt created it and died before the metadata update.
		if err := w.client().ModifyCollection(ctx, w.j.sp.tenant, w.j.sp.database, c.ID, nil, w.info.Metadata); err != nil {
			return nil, fmt.Errorf("set metadata of collection %q: %w", name, err)
		}
	}
	return c, nil
}

// archivedConfig is an archived configuration, nil when the snapshot holds
// none.
func archivedConfig(cfg json.RawMessage) json.RawMessage {
	if t := bytes.TrimSpace(cfg); len(t) == 0 || bytes.Equal(t, []byte("null")) {
		return nil
	}
	return cfg
}

// resetProgress forgets the batches written to a work collection that is
// gone or replaced. Callers hold no lock.
func (w *collWriter) resetProgress(ctx context.Context, workID string) error {
	return w.j.saveCheckpoint(ctx, func(ck *checkpoint) {
		ck.RecordsWritten -= w.cs.Records
		w.cs.WorkID, w.cs.NextBatch, w.cs.Records, w.cs.MaxDiff, w.cs.FloatsOff = workID, 0, 0, 0, 0
		w.cs.Stage = stageWriting
	})
}

// prepareStaging creates the staging collection, or finds the one an
// earlier attempt of this op was writing.
func (w *collWriter) prepareStaging(ctx context.Context) error {
	// Only a checkpointed staging collection is resumed: without one there
	// is nothing to look up (create finds a leftover by name anyway).
	if w.cs.WorkID != "" {
		s, err := w.get(ctx, w.staging)
		if err != nil {
			return err
		}
		if s != nil && w.cs.WorkID == s.ID {
			return nil // resume at NextBatch
		}
	}
	// Either nothing was written yet, or an earlier attempt created it and
	// died before checkpointing: re-adding what it holds is harmless.
	c, err := w.create(ctx, w.staging)
	if err != nil {
		return err
	}
	return w.resetProgress(ctx, c.ID)
}

// prepareInPlace deletes and recreates the target, unless an earlier
// attempt of this op already recreated it.
func (w *collWriter) prepareInPlace(ctx context.Context) error {
	live, err := w.get(ctx, w.cs.Target)
	if err != nil {
		return err
	}
	if live != nil && w.cs.WorkID == live.ID {
		return nil
	}
	if live != nil {
		if err := w.client().DeleteCollection(ctx, w.j.sp.tenant, w.j.sp.database, w.cs.Target); err != nil && !errors.Is(err, chroma.ErrNotFound) {
			return fmt.Errorf("delete collection %q to restore it in place: %w", w.cs.Target, err)
		}
	}
	c, err := w.create(ctx, w.cs.Target)
	if err != nil {
		return err
	}
	return w.resetProgress(ctx, c.ID)
}

// prepareUpsert finds the live target, creating it if it is missing.
func (w *collWriter) prepareUpsert(ctx context.Context) error {
	live, err := w.get(ctx, w.cs.Target)
	if err != nil {
		return err
	}
	if live == nil {
		if live, err = w.create(ctx, w.cs.Target); err != nil {
			return err
		}
	}
	if live.ID == w.cs.WorkID {
		return nil
	}
	return w.resetProgress(ctx, live.ID)
}

// wants reports whether batch k (named name) is still to be written.
func (w *collWriter) wants(k int, name string) bool {
	if w.stage0 != stageWriting || k < w.from {
		return false
	}
	return w.sel == nil || w.sel[name]
}

func (w *collWriter) start(ctx context.Context) {
	w.j.mu.Lock()
	w.stage0, w.from = w.cs.Stage, w.cs.NextBatch
	w.j.mu.Unlock()
	w.ctx, w.cancel = context.WithCancelCause(ctx)
	workers := w.j.s.cfg.AddWorkers
	w.in = make(chan writeItem, 1)
	w.added = make(chan writeItem, workers)
	w.vdone = make(chan struct{})
	for range workers {
		w.adders.Go(w.addLoop)
	}
	go func() {
		w.adders.Wait()
		close(w.added)
	}()
	go w.verifyLoop()
}

func (w *collWriter) fail(err error) {
	w.mu.Lock()
	if w.err == nil {
		w.err = err
	}
	w.mu.Unlock()
	w.cancel(err)
}

func (w *collWriter) submit(k int, b *record.Batch) error {
	parts := w.parts(k, b)
	var enc *chroma.Encoded
	if !w.submitted {
		// The first batch is encoded here, before the archive is read on:
		// reading on would slow the encoding of the add that Chroma, idle
		// until then, waits for. Its parts share the encoding.
		w.submitted = true
		filled, err := fillNullEmbeddings(b, w.dim, w.cs.Collection)
		if err == nil {
			enc, err = w.client().Encode(w.ctx, filled)
		}
		if err != nil {
			w.fail(fmt.Errorf("write %s batch %d of collection %q: %w", w.how, k, w.cs.Collection, err))
			return w.failure()
		}
	}
	w.mu.Lock()
	w.order = append(w.order, k)
	w.left[k] = len(parts)
	w.mu.Unlock()
	for _, p := range parts {
		it := writeItem{k: k, b: b.Slice(p[0], p[1]), tail: p[0] > 0}
		if enc != nil {
			it.enc, it.from, it.to = enc, p[0], p[1]
		}
		select {
		case w.in <- it:
		case <-w.ctx.Done():
			return w.failure()
		}
	}
	return nil
}

func (w *collWriter) failure() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	return context.Cause(w.ctx)
}

func (w *collWriter) addLoop() {
	for it := range w.in {
		if w.ctx.Err() != nil {
			continue
		}
		var err error
		if w.how == writeUpsert {
			// Chroma's upsert merges metadata and keeps a document or URI
			// sent as null, so each record is replaced as a whole: deleted,
			// then added. Both steps repeat harmlessly.
			err = w.client().Delete(w.ctx, w.j.sp.tenant, w.j.sp.database, w.cs.WorkID, it.b.IDs)
		}
		if err == nil && it.enc != nil {
			err = w.client().AddEncoded(w.ctx, w.j.sp.tenant, w.j.sp.database, w.cs.WorkID, it.enc, it.from, it.to)
		} else if err == nil {
			var b *record.Batch
			if b, err = fillNullEmbeddings(it.b, w.dim, w.cs.Collection); err == nil {
				err = w.client().Add(w.ctx, w.j.sp.tenant, w.j.sp.database, w.cs.WorkID, b)
			}
		}
		if err != nil {
			w.fail(fmt.Errorf("write %s batch %d of collection %q: %w", w.how, it.k, w.cs.Collection, err))
			continue
		}
		it.enc = nil // sent: the verifier needs the archived part only
		select {
		case w.added <- it:
		case <-w.ctx.Done():
		}
	}
}

// fillNullEmbeddings turns null embeddings (which Chroma gives for zero
// vectors in cosine spaces) into zero vectors, which Chroma stores as null
// again; it refuses a null embedding on add.
// dim is the collection's dimension when known (0: from the batch).
func fillNullEmbeddings(b *record.Batch, dim int, collection string) (*record.Batch, error) {
	if b.Embeddings == nil {
		return nil, fmt.Errorf("batch of collection %q has no embeddings", collection)
	}
	var nulls bool
	for _, e := range b.Embeddings {
		if e == nil {
			nulls = true
		} else if dim == 0 {
			dim = len(e)
		}
	}
	if !nulls {
		return b, nil
	}
	if dim == 0 {
		return nil, fmt.Errorf("collection %q: records with null embeddings and no known dimension cannot be written", collection)
	}
	cp := *b
	cp.Embeddings = make([][]float32, len(b.Embeddings))
	for i, e := range b.Embeddings {
		if e == nil {
			e = make([]float32, dim)
		}
		cp.Embeddings[i] = e
	}
	return &cp, nil
}

// readBack is a batch, or part, read back from Chroma to be verified.
type readBack struct {
	it       writeItem
	got      *record.Batch
	err      error
	done     chan struct{} // closed once got and err are set
	compared chan struct{} // closed once it was compared (or skipped)
}

// verifyLoop reads back each batch added and compares it with the archive,
// then commits it, one batch at a time: a read-back holds Chroma's whole
// answer (15 MB for 1,725 records of 768-d) besides the records. A split
// batch's tail is read back as soon as it is added, while the rest of the
// batch is still being decoded and compared, so that after the last add
// only the tail's own read-back is left. Comparing and committing stay in
// the order the batches were added.
func (w *collWriter) verifyLoop() {
	defer close(w.vdone)
	cosine := spaceOf(w.info.Configuration, w.info.Metadata) == "cosine"
	pending := make(chan *readBack, 1)
	go func() {
		defer close(pending)
		var prev *readBack
		for it := range w.added {
			if prev != nil && !it.tail {
				<-prev.compared
			}
			rb := &readBack{it: it, done: make(chan struct{}), compared: make(chan struct{})}
			pending <- rb
			go func() {
				defer close(rb.done)
				if w.ctx.Err() != nil {
					rb.err = context.Cause(w.ctx)
					return
				}
				rb.got, rb.err = w.client().Get(w.ctx, w.j.sp.tenant, w.j.sp.database, w.cs.WorkID, chroma.GetRequest{IDs: it.b.IDs})
			}()
			prev = rb
		}
	}()
	for rb := range pending {
		<-rb.done
		w.check(rb.it, rb.got, rb.err, cosine)
		rb.got = nil
		close(rb.compared)
	}
}

// check compares a batch read back (got, or the error reading it) with
// the archive and commits it; a difference or an error fails the writer.
func (w *collWriter) check(it writeItem, got *record.Batch, err error, cosine bool) {
	if w.ctx.Err() != nil {
		return
	}
	if err != nil {
		w.fail(fmt.Errorf("read back batch %d of collection %q: %w", it.k, w.cs.Collection, err))
		return
	}
	chk := batchCheck{cosine: cosine}
	chk.compare(it.b, got)
	if chk.total > 0 {
		w.j.addDiffs(w.idx, chk.diffs, chk.total)
		first := chk.diffs[0]
		if chk.total > 1 {
			first = fmt.Sprintf("%d differences, first: %s", chk.total, first)
		}
		w.fail(fmt.Errorf("%w: collection %q, batch %d: %s", errVerify, w.cs.Collection, it.k, first))
		return
	}
	if err := w.commit(it, chk.maxDiff, chk.floatsOff); err != nil {
		w.fail(err)
	}
}

// commit checkpoints the verified batches that continue the run of
// verified batches in archive order.
func (w *collWriter) commit(it writeItem, maxDiff float64, floatsOff int) error {
	w.mu.Lock()
	w.done[it.k] += it.b.Len()
	w.floatsOff[it.k] += floatsOff
	w.left[it.k]--
	partial := w.left[it.k] > 0
	next, recs, off := -1, 0, 0
	for len(w.order) > 0 {
		k := w.order[0]
		if w.left[k] > 0 {
			break
		}
		next = k + 1
		recs += w.done[k]
		off += w.floatsOff[k]
		delete(w.done, k)
		delete(w.floatsOff, k)
		delete(w.left, k)
		w.order = w.order[1:]
	}
	w.mu.Unlock()
	if next < 0 {
		if partial {
			return w.j.s.callHook(w.ctx, w.j.hookPoint("part", w))
		}
		return nil
	}
	j := w.j
	if err := j.saveCheckpoint(w.ctx, func(ck *checkpoint) {
		w.cs.NextBatch = next
		w.cs.Records += int64(recs)
		w.cs.MaxDiff = max(w.cs.MaxDiff, maxDiff)
		w.cs.FloatsOff += int64(off)
		ck.RecordsWritten += int64(recs)
	}); err != nil {
		return err
	}
	j.mu.Lock()
	done, total := j.ck.RecordsWritten, j.ck.Plan.WriteRecords
	j.mu.Unlock()
	j.progress.Update(contract.Progress{Phase: phaseRestoring, Collection: w.cs.Collection, DoneRecords: done, TotalRecords: total})
	return j.s.callHook(w.ctx, j.hookPoint("batch", w))
}

// drain closes the input and waits until the adders sent every batch
// submitted (or stopped); the verifier may still be reading them back.
func (w *collWriter) drain() {
	w.closeInput()
	w.adders.Wait()
}

func (w *collWriter) closeInput() {
	if !w.closed {
		w.closed = true
		close(w.in)
	}
}

// stop closes the input and waits for the writer's goroutines.
func (w *collWriter) stop() error {
	w.closeInput()
	<-w.vdone
	return w.failure()
}

// abort stops the writer after an error elsewhere.
func (w *collWriter) abort() {
	w.cancel(errAborted)
	_ = w.stop()
}

// finish waits for the last batches, then checks the whole collection and,
// when staging, swaps it in. Only a finish in the foreground (phases) sets
// the job's phase: behind it, the next collection is being written.
func (w *collWriter) finish(ctx context.Context, phases bool) error {
	staged, err := w.stageDone(ctx)
	if err != nil || !staged {
		return err
	}
	return w.swapIn(ctx, phases)
}

// stageDone waits for the last batches and checks the whole collection.
// In place and batch-level writes are then done; a staging collection is
// staged (true), to be swapped in.
func (w *collWriter) stageDone(ctx context.Context) (bool, error) {
	if err := w.stop(); err != nil {
		return false, err
	}
	w.cancel(nil)
	if err := ctx.Err(); err != nil {
		return false, err
	}
	j := w.j
	if w.how == writeUpsert {
		return false, w.done_(ctx)
	}
	if w.cs.Stage == stageWriting {
		name := w.cs.Target
		if w.how == writeStage {
			name = w.staging
		}
		if err := j.checkCollection(ctx, w.idx, name, w.cs.WorkID); err != nil {
			return false, err
		}
		if w.how == writeInPlace {
			return false, w.done_(ctx)
		}
		if err := j.saveCheckpoint(ctx, func(*checkpoint) { w.cs.Stage = stageStaged }); err != nil {
			return false, err
		}
	}
	return true, nil
}

// swapIn swaps a staged collection in and marks it done.
func (w *collWriter) swapIn(ctx context.Context, phases bool) error {
	j := w.j
	if phases {
		j.setPhase(ctx, phaseSwapping)
	}
	if err := w.swap(ctx); err != nil {
		return err
	}
	if phases {
		j.setPhase(ctx, phaseRestoring)
	}
	return w.done_(ctx)
}

func (w *collWriter) done_(ctx context.Context) error {
	if err := w.j.saveCheckpoint(ctx, func(*checkpoint) { w.cs.Stage = stageDone }); err != nil {
		return err
	}
	w.j.step(ctx, "collection restored", map[string]any{"collection": w.cs.Collection, "target": w.cs.Target,
		"action": w.cs.Action, "how": w.how, "records": w.cs.Records})
	return nil
}

// checkCollection compares a written collection as a whole with archive
// collection i: it is the collection written to (workID), holds exactly the
// archived number of records (each of which was verified as it was
// written, so no id is missing and none is extra), and has the archived
// metadata and configuration.
func (j *job) checkCollection(ctx context.Context, i int, name, workID string) error {
	sp := j.sp
	info, want := sp.arc.md.Collections[i], sp.m.Collections[i]
	c, err := sp.target.GetCollection(ctx, sp.tenant, sp.database, name)
	if err != nil && !errors.Is(err, chroma.ErrNotFound) {
		return fmt.Errorf("get collection %q: %w", name, err)
	}
	var diffs []string
	switch {
	case c == nil:
		diffs = append(diffs, fmt.Sprintf("collection %q does not exist", name))
	case c.ID != workID:
		diffs = append(diffs, fmt.Sprintf("collection %q is %s, not the collection written (%s)", name, c.ID, workID))
	default:
		n, err := sp.target.Count(ctx, sp.tenant, sp.database, c.ID)
		if err != nil {
			return fmt.Errorf("count collection %q: %w", name, err)
		}
		if int64(n) != want.Count {
			diffs = append(diffs, fmt.Sprintf("%d records, the snapshot has %d", n, want.Count))
		}
		if !metadataEqual(c.Metadata, info.Metadata) {
			diffs = append(diffs, fmt.Sprintf("collection metadata %s, the snapshot has %s", metaJSON(c.Metadata), metaJSON(info.Metadata)))
		}
		if cfg := archivedConfig(info.Configuration); cfg != nil && !jsonEqual(c.Configuration, cfg) {
			diffs = append(diffs, fmt.Sprintf("configuration %s, the snapshot has %s", c.Configuration, info.Configuration))
		}
	}
	if len(diffs) > 0 {
		j.addDiffs(i, diffs, len(diffs))
		return fmt.Errorf("%w: collection %q restored as %q: %s", errVerify, want.Name, name, diffs[0])
	}
	return nil
}

// swap puts the staging collection in the target's place by renames:
// target -> old, staging -> target, then deletes old. Readers see the old
// collection or the restored one, never a half-written one. Each step is
// recognised by the names that exist, so a redelivered command finishes a
// swap its predecessor was cut short in.
func (w *collWriter) swap(ctx context.Context) error {
	sp := w.j.sp
	if w.cs.Stage == stageStaged {
		live, err := w.get(ctx, w.cs.Target)
		if err != nil {
			return err
		}
		if live == nil || live.ID != w.cs.WorkID {
			staging, err := w.get(ctx, w.staging)
			if err != nil {
				return err
			}
			if staging == nil || staging.ID != w.cs.WorkID {
				return fmt.Errorf("staging collection %q (%s) of %q is gone; nothing was swapped in", w.staging, w.cs.WorkID, w.cs.Target)
			}
			if live != nil {
				old, err := w.get(ctx, w.old)
				if err != nil {
					return err
				}
				if old != nil {
					return fmt.Errorf("cannot swap %q in: both %q and %q exist; rename or delete one of them and retry", w.cs.Target, w.cs.Target, w.old)
				}
				if err := w.rename(ctx, live.ID, w.old); err != nil {
					return err
				}
				if err := w.j.s.callHook(ctx, w.j.hookPoint("swap_renamed_old", w)); err != nil {
					return err
				}
			}
			if err := w.rename(ctx, w.cs.WorkID, w.cs.Target); err != nil {
				return err
			}
		}
		if err := w.j.saveCheckpoint(ctx, func(*checkpoint) { w.cs.Stage = stageSwapped }); err != nil {
			return err
		}
	}
	w.j.log.Debug("swapped", "collection", w.cs.Target)
	err := w.client().DeleteCollection(ctx, sp.tenant, sp.database, w.old)
	if err != nil && !errors.Is(err, chroma.ErrNotFound) {
		return fmt.Errorf("delete the replaced collection (now %q): %w", w.old, err)
	}
	w.j.log.Debug("old deleted", "collection", w.cs.Target)
	return nil
}

func (w *collWriter) rename(ctx context.Context, id, name string) error {
	if err := w.client().ModifyCollection(ctx, w.j.sp.tenant, w.j.sp.database, id, &name, nil); err != nil {
		return fmt.Errorf("rename collection %s to %q: %w", id, name, err)
	}
	return nil
}

// undo takes back a collection's unfinished work after a failure or cancel:
// a swap cut short is reversed and the staging collection deleted, so the
// target holds what it held before; of one swapped in, the replaced
// collection is deleted. In place and batch-level writes cannot be undone;
// the safety snapshot holds what was there.
func (w *collWriter) undo(ctx context.Context) error {
	if w.how != writeStage || w.cs.Stage == stageDone {
		return nil
	}
	_, err := takeBack(ctx, w.client(), w.j.sp.tenant, w.j.sp.database, w.leftover())
	return err
}

// leftover names what the writer's stage and swap may leave.
func (w *collWriter) leftover() contract.LeftoverCollection {
	return contract.LeftoverCollection{Target: w.cs.Target, Staging: w.staging, Old: w.old, WorkID: w.cs.WorkID, Swapped: w.cs.Stage == stageSwapped}
}

// takenBack says what takeBack found and did.
type takenBack int

const (
	tookRestored      takenBack = iota // swapped in: the replaced collection is deleted
	tookRenamedBack                    // the live one is renamed back from Old; staging deleted
	tookNothingToPut                   // neither Target nor Old exists; staging deleted
	tookLiveLeftAlone                  // Target exists and is not the restored one; staging deleted
)

// takeBack takes back what the stage and swap of one collection left, l:
// of one swapped in (restored and verified) the replaced collection l.Old
// is deleted; otherwise a swap cut short is reversed (l.Old renamed back to
// l.Target while that name is free) and the staging collection deleted.
// Each step is recognised by the names that exist, so it repeats
// harmlessly.
func takeBack(ctx context.Context, c *chroma.Client, tenant, database string, l contract.LeftoverCollection) (takenBack, error) {
	how := tookRestored
	if !l.Swapped {
		live, err := findCollection(ctx, c, tenant, database, l.Target)
		if err != nil {
			return 0, err
		}
		switch {
		case live == nil:
			displaced, err := findCollection(ctx, c, tenant, database, l.Old)
			if err != nil {
				return 0, err
			}
			how = tookNothingToPut
			if displaced != nil {
				name := l.Target
				if err := c.ModifyCollection(ctx, tenant, database, displaced.ID, &name, nil); err != nil {
					return 0, fmt.Errorf("put %q back: rename collection %s: %w", l.Target, displaced.ID, err)
				}
				how = tookRenamedBack
			}
		case l.WorkID != "" && live.ID == l.WorkID:
			// swapped in after all: it is restored and verified
		default:
			how = tookLiveLeftAlone
		}
	}
	if how == tookRestored {
		err := c.DeleteCollection(ctx, tenant, database, l.Old)
		if err != nil && !errors.Is(err, chroma.ErrNotFound) {
			return 0, fmt.Errorf("delete the replaced collection %q: %w", l.Old, err)
		}
		return how, nil
	}
	err := c.DeleteCollection(ctx, tenant, database, l.Staging)
	if err != nil && !errors.Is(err, chroma.ErrNotFound) {
		return 0, fmt.Errorf("delete staging collection %q: %w", l.Staging, err)
	}
	return how, nil
}
