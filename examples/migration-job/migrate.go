package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	chromago "github.com/amikos-tech/chroma-go/pkg/api/v2"
	chhttp "github.com/amikos-tech/chroma-go/pkg/commons/http"
	"github.com/amikos-tech/chroma-go/pkg/embeddings"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/migration"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/natsconn"
	"github.com/nats-io/nats.go"
)

// chromaTimeout bounds one request to Chroma.
const chromaTimeout = 2 * time.Minute

// outageRetry bounds how long, paused time not counted, a Chroma request
// that got no answer (or a 429 or 5xx, such as the read-only gate's 503
// while a rollback fences the database) is tried again. The watchdog
// pauses the job once Chroma fails its heartbeats: the job then waits for
// resume and tries again, instead of failing the run at the first error.
const outageRetry = 2 * time.Minute

// transient says a Chroma request may succeed when sent again.
func transient(err error) bool {
	var ce *chhttp.ChromaError
	if !errors.As(err, &ce) {
		return false
	}
	return ce.ErrorCode == 0 || ce.ErrorCode == http.StatusTooManyRequests || ce.ErrorCode >= 500
}

// retry runs request, and again after a transient failure, waiting while
// the job is paused, for up to outageRetry of unpaused time. Every request
// retried is a read or an idempotent write (update, upsert, delete).
func (m *migrator) retry(ctx context.Context, what string, request func() error) error {
	left, wait := outageRetry, 250*time.Millisecond
	for {
		err := request()
		if err == nil || ctx.Err() != nil || !transient(err) {
			return err
		}
		if left <= 0 {
			return fmt.Errorf("%w (Chroma did not answer for %s)", err, outageRetry)
		}
		m.log.Warn("Chroma request failed; trying again", "request", what, "err", err)
		began := time.Now()
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return context.Cause(ctx)
		case <-t.C:
		}
		left -= time.Since(began)
		wait = min(2*wait, 5*time.Second)
		if err := m.job.WaitWhilePaused(ctx); err != nil {
			return err
		}
	}
}

// migrator runs one migration: copy (or rewrite in place) with the
// transformation, then validation, reporting through the SDK.
type migrator struct {
	cfg      *config
	log      *slog.Logger
	job      *migration.Job
	src, dst chromago.Client

	// expected holds, per collection and id, the fingerprint of the record
	// as the migration means to leave it (lost records included: they
	// count as invalid when validation does not find them).
	expected map[string]map[string]fingerprint
	done     int64
}

// migrate connects, announces the migration, runs it and reports how it
// ended. An abort ends it with an error wrapping migration.ErrAborted.
func migrate(ctx context.Context, cfg *config, log *slog.Logger) error {
	nc, err := cfg.NATS.Connect(cfg.NATSURL, nats.Name("migration-job "+cfg.Job), nats.MaxReconnects(-1))
	if err != nil {
		return fmt.Errorf("connect to NATS at %s: %w", natsconn.Redact(cfg.NATSURL), err)
	}
	defer nc.Close()
	job, err := migration.New(nc, cfg.Job, migration.WithSubjectPrefix(cfg.SubjectPrefix), migration.WithLogger(log))
	if err != nil {
		return err
	}
	defer func() { _ = job.Close() }()
	m := &migrator{cfg: cfg, log: log, job: job, expected: map[string]map[string]fingerprint{}}
	if m.src, err = newClient(cfg.ChromaURL, cfg.Tenant, cfg.Database); err != nil {
		return err
	}
	defer func() { _ = m.src.Close() }()
	if m.dst, err = newClient(cfg.TargetChromaURL, cfg.TargetTenant, cfg.TargetDatabase); err != nil {
		return err
	}
	defer func() { _ = m.dst.Close() }()

	names, err := m.collections(ctx)
	if err != nil {
		return err
	}
	if !cfg.inPlace() {
		if err := m.ensureTargetDatabase(ctx); err != nil {
			return err
		}
	}
	r, err := job.Start(ctx, migration.StartOptions{
		Tenant: cfg.TargetTenant, Database: cfg.TargetDatabase,
		SnapshotID: cfg.SnapshotID, TakeSnapshot: cfg.TakeSnapshot,
		TimeLimit: cfg.TimeLimit, Collections: cfg.Collections,
	})
	if err != nil {
		return err
	}
	log.Info("migration started", "run", r.Sequence, "source", cfg.Tenant+"/"+cfg.Database,
		"target", cfg.TargetTenant+"/"+cfg.TargetDatabase, "in_place", cfg.inPlace(), "collections", len(names), "lose", cfg.Lose)

	// From here on, every way out is reported: completed or failed.
	if err := m.work(ctx, names); err != nil {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if ferr := job.Fail(fctx, err); ferr != nil {
			log.Error("could not report the failure", "err", ferr)
		}
		return err
	}
	if err := job.Complete(ctx); err != nil {
		return err
	}
	log.Info("migration completed", "records", m.done)
	return nil
}

func newClient(url, tenant, database string) (chromago.Client, error) {
	c, err := chromago.NewHTTPClient(chromago.WithBaseURL(url), chromago.WithDatabaseAndTenant(database, tenant),
		chromago.WithTimeout(chromaTimeout))
	if err != nil {
		return nil, fmt.Errorf("chroma client for %s: %w", url, err)
	}
	return c, nil
}

// work is the migration proper. An abort cancels what is in flight.
func (m *migrator) work(ctx context.Context, names []string) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		select {
		case <-m.job.Aborted():
			cancel(fmt.Errorf("%w: %s", migration.ErrAborted, m.job.AbortReason()))
		case <-ctx.Done():
		}
	}()
	err := m.steps(ctx, names)
	if cause := context.Cause(ctx); err != nil && errors.Is(cause, migration.ErrAborted) {
		return cause
	}
	return err
}

func (m *migrator) steps(ctx context.Context, names []string) error {
	if m.cfg.TakeSnapshot {
		sctx, cancel := context.WithTimeout(ctx, m.cfg.SnapshotTimeout)
		id, err := m.job.WaitForSnapshot(sctx)
		cancel()
		if err != nil {
			return err
		}
		m.log.Info("pre-migration snapshot taken", "snapshot_id", id)
	}
	for _, name := range names {
		if err := m.copyCollection(ctx, name); err != nil {
			return err
		}
	}
	var valid, total int64
	var per []contract.CollectionValidation
	for _, name := range names {
		v, err := m.validateCollection(ctx, name)
		if err != nil {
			return err
		}
		per = append(per, v)
		valid += v.ValidChunks
		total += v.TotalChunks
	}
	if total == 0 {
		m.log.Warn("nothing to validate: the source holds no records")
		return nil
	}
	m.log.Info("validated", "valid", valid, "total", total, "ratio", float64(valid)/float64(total))
	return m.job.ReportValidation(ctx, valid, total, per...)
}

// between runs between pages: it waits while paused, stops on abort, and
// sleeps the configured page delay.
func (m *migrator) between(ctx context.Context, delay time.Duration) error {
	if err := m.job.WaitWhilePaused(ctx); err != nil {
		return err
	}
	if delay <= 0 {
		return nil
	}
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return nil
	}
}

func (m *migrator) heartbeat(ctx context.Context, phase string) {
	// A missed heartbeat is not worth stopping the migration for.
	if err := m.job.Heartbeat(ctx, phase, m.done); err != nil && ctx.Err() == nil {
		m.log.Warn("heartbeat not sent", "err", err)
	}
}

// collections lists the source collections to migrate, in Chroma's order.
func (m *migrator) collections(ctx context.Context) ([]string, error) {
	const pageSize = 100
	var all []string
	for offset := 0; ; offset += pageSize {
		cols, err := m.src.ListCollections(ctx, chromago.ListWithLimit(pageSize), chromago.ListWithOffset(offset))
		if err != nil {
			return nil, fmt.Errorf("list collections of %s/%s: %w", m.cfg.Tenant, m.cfg.Database, err)
		}
		for _, c := range cols {
			all = append(all, c.Name())
		}
		if len(cols) < pageSize {
			break
		}
	}
	if len(m.cfg.Collections) == 0 {
		return all, nil
	}
	have := map[string]bool{}
	for _, n := range all {
		have[n] = true
	}
	for _, n := range m.cfg.Collections {
		if !have[n] {
			return nil, fmt.Errorf("collection %q is not in %s/%s", n, m.cfg.Tenant, m.cfg.Database)
		}
	}
	return m.cfg.Collections, nil
}

// ensureTargetDatabase creates the target tenant and database if missing.
func (m *migrator) ensureTargetDatabase(ctx context.Context) error {
	tenant := chromago.NewTenant(m.cfg.TargetTenant)
	db := chromago.NewDatabase(m.cfg.TargetDatabase, tenant)
	if _, err := m.dst.GetDatabase(ctx, db); err == nil {
		return nil
	}
	if _, err := m.dst.GetTenant(ctx, tenant); err != nil {
		if _, err := m.dst.CreateTenant(ctx, tenant); err != nil {
			return fmt.Errorf("create tenant %s: %w", m.cfg.TargetTenant, err)
		}
	}
	if _, err := m.dst.CreateDatabase(ctx, db); err != nil {
		return fmt.Errorf("create database %s/%s: %w", m.cfg.TargetTenant, m.cfg.TargetDatabase, err)
	}
	return nil
}

// ensureTargetCollection gets or creates the target collection with the
// source's index configuration and metadata.
func (m *migrator) ensureTargetCollection(ctx context.Context, src chromago.Collection) (chromago.Collection, error) {
	opts := []chromago.CreateCollectionOption{
		chromago.WithEmbeddingFunctionCreate(noopEmbeddingFunction{}),
		chromago.WithDisableEFConfigStorage(),
		chromago.WithIfNotExistsCreate(),
	}
	if cfg := src.Configuration(); cfg != nil {
		out := chromago.NewCollectionConfiguration()
		for _, k := range []string{"hnsw", "spann"} {
			if v, ok := cfg.GetRaw(k); ok && v != nil {
				out.SetRaw(k, v)
			}
		}
		if len(out.Keys()) > 0 {
			opts = append(opts, chromago.WithConfigurationCreate(out))
		}
	}
	if md := src.Metadata(); md != nil {
		values := map[string]any{}
		for _, k := range md.Keys() {
			raw, _ := md.GetRaw(k)
			if mv, ok := raw.(chromago.MetadataValue); ok {
				raw, _ = mv.GetRaw()
			}
			values[k] = raw
		}
		if len(values) > 0 {
			opts = append(opts, chromago.WithCollectionMetadataCreate(exactCollectionMetadata{
				CollectionMetadata: chromago.NewMetadataFromMap(values), values: values,
			}))
		}
	}
	c, err := m.dst.CreateCollection(ctx, src.Name(), opts...)
	if err != nil {
		return nil, fmt.Errorf("create target collection %s: %w", src.Name(), err)
	}
	return c, nil
}

// copyCollection migrates one collection page by page.
func (m *migrator) copyCollection(ctx context.Context, name string) error {
	var src chromago.Collection
	err := m.retry(ctx, "get collection "+name, func() (err error) {
		src, err = m.src.GetCollection(ctx, name, chromago.WithEmbeddingFunctionGet(noopEmbeddingFunction{}))
		return err
	})
	if err != nil {
		return fmt.Errorf("get collection %s: %w", name, err)
	}
	dst := src
	if !m.cfg.inPlace() {
		if dst, err = m.ensureTargetCollection(ctx, src); err != nil {
			return err
		}
	}
	exp := map[string]fingerprint{}
	m.expected[name] = exp
	var lostIDs []string
	phase := "copy " + name
	for offset := 0; ; offset += m.cfg.PageSize {
		if err := m.between(ctx, 0); err != nil {
			return err
		}
		var p *page
		err := m.retry(ctx, fmt.Sprintf("read %s at %d", name, offset), func() (err error) {
			p, err = readPage(ctx, src, offset, m.cfg.PageSize)
			return err
		})
		if err != nil {
			return err
		}
		out := &page{}
		for i, id := range p.IDs {
			doc, meta := transform(p.Documents[i], p.Metadatas[i], m.cfg.MigratedBy)
			exp[id] = fingerprintOf(doc, meta, p.Embeddings[i])
			if lost(m.cfg.Lose, name, id) {
				lostIDs = append(lostIDs, id)
				continue
			}
			out.IDs = append(out.IDs, id)
			out.Documents = append(out.Documents, doc)
			out.Metadatas = append(out.Metadatas, meta)
			out.Embeddings = append(out.Embeddings, p.Embeddings[i])
		}
		if err := m.retry(ctx, fmt.Sprintf("write %s at %d", name, offset), func() error { return m.write(ctx, dst, out) }); err != nil {
			return fmt.Errorf("write %s at %d: %w", name, offset, err)
		}
		m.done += int64(p.Len())
		m.heartbeat(ctx, phase)
		if p.Len() < m.cfg.PageSize {
			break
		}
		if err := m.between(ctx, m.cfg.PageDelay); err != nil {
			return err
		}
	}
	// In place, the lost records are deleted, once the collection's pages
	// are read (deleting earlier would shift the pages still to read).
	if m.cfg.inPlace() {
		for len(lostIDs) > 0 {
			n := min(len(lostIDs), m.cfg.PageSize)
			ids := docIDs(lostIDs[:n])
			if err := m.retry(ctx, "delete the lost records of "+name, func() error { return dst.Delete(ctx, chromago.WithIDs(ids...)) }); err != nil {
				return fmt.Errorf("delete the lost records of %s: %w", name, err)
			}
			lostIDs = lostIDs[n:]
		}
	}
	m.log.Info("collection migrated", "collection", name, "records", len(exp))
	return nil
}

// write stores a page of transformed records: in place by update (Chroma
// merges the metadata sent into the record's, so only "migrated_by" is
// sent), else by upsert into the target. Records with and without a
// document go in separate requests, as chroma-go cannot send a null among
// documents. chroma-go v0.4.0 always sends an embeddings list, so the
// embeddings read are sent back too.
func (m *migrator) write(ctx context.Context, col chromago.Collection, p *page) error {
	var withDoc, noDoc []int
	for i := range p.IDs {
		if p.Embeddings[i] == nil {
			return fmt.Errorf("record %q has no embedding; chroma-go cannot write it", p.IDs[i])
		}
		if p.Documents[i] != nil {
			withDoc = append(withDoc, i)
		} else {
			noDoc = append(noDoc, i)
		}
	}
	for _, group := range [][]int{withDoc, noDoc} {
		if len(group) == 0 {
			continue
		}
		ids := make([]chromago.DocumentID, len(group))
		embs := make([]embeddings.Embedding, len(group))
		metas := make([]chromago.DocumentMetadata, len(group))
		var texts []string
		for k, i := range group {
			ids[k] = chromago.DocumentID(p.IDs[i])
			embs[k] = embeddings.NewEmbeddingFromFloat32(p.Embeddings[i])
			values := p.Metadatas[i]
			if m.cfg.inPlace() {
				values = map[string]any{migratedByKey: m.cfg.MigratedBy}
			}
			md, err := newExactMetadata(values)
			if err != nil {
				return fmt.Errorf("record %q: %w", p.IDs[i], err)
			}
			metas[k] = md
			if p.Documents[i] != nil {
				texts = append(texts, *p.Documents[i])
			}
		}
		var err error
		if m.cfg.inPlace() {
			opts := []chromago.UpdateOption{chromago.WithIDs(ids...), chromago.WithMetadatas(metas...), chromago.WithEmbeddings(embs...)}
			if texts != nil {
				opts = append(opts, chromago.WithTexts(texts...))
			}
			err = col.Update(ctx, opts...)
		} else {
			opts := []chromago.CollectionAddOption{chromago.WithIDs(ids...), chromago.WithMetadatas(metas...), chromago.WithEmbeddings(embs...)}
			if texts != nil {
				opts = append(opts, chromago.WithTexts(texts...))
			}
			err = col.Upsert(ctx, opts...)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// validateCollection reads the target collection and counts the records
// that are present and equal to what the migration meant to write.
func (m *migrator) validateCollection(ctx context.Context, name string) (contract.CollectionValidation, error) {
	exp := m.expected[name]
	v := contract.CollectionValidation{Collection: name, TotalChunks: int64(len(exp))}
	var col chromago.Collection
	err := m.retry(ctx, "get target collection "+name, func() (err error) {
		col, err = m.dst.GetCollection(ctx, name, chromago.WithEmbeddingFunctionGet(noopEmbeddingFunction{}))
		return err
	})
	if err != nil {
		return v, fmt.Errorf("get target collection %s: %w", name, err)
	}
	var mismatched []string
	for offset := 0; ; offset += m.cfg.PageSize {
		if err := m.between(ctx, 0); err != nil {
			return v, err
		}
		var p *page
		err := m.retry(ctx, fmt.Sprintf("validate %s at %d", name, offset), func() (err error) {
			p, err = readPage(ctx, col, offset, m.cfg.PageSize)
			return err
		})
		if err != nil {
			return v, fmt.Errorf("validate: %w", err)
		}
		for i, id := range p.IDs {
			want, ok := exp[id]
			if !ok {
				continue // not the migration's
			}
			if want.matches(fingerprintOf(p.Documents[i], p.Metadatas[i], p.Embeddings[i])) {
				v.ValidChunks++
			} else if len(mismatched) < 5 {
				mismatched = append(mismatched, id)
			}
		}
		m.heartbeat(ctx, "validate "+name)
		if p.Len() < m.cfg.PageSize {
			break
		}
	}
	if len(mismatched) > 0 {
		m.log.Warn("records differ from what was written", "collection", name, "examples", strings.Join(mismatched, ", "))
	}
	m.log.Info("collection validated", "collection", name, "valid", v.ValidChunks, "total", v.TotalChunks)
	return v, nil
}

func docIDs(ids []string) []chromago.DocumentID {
	out := make([]chromago.DocumentID, len(ids))
	for i, id := range ids {
		out[i] = chromago.DocumentID(id)
	}
	return out
}
