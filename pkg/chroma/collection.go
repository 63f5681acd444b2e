package chroma

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/record"
)

// Collection is a collection as the server describes it.
type Collection struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	// Configuration is the server's configuration_json, verbatim (hnsw or
	// spann parameters, embedding function). Pass it back unchanged to
	// CreateCollection to recreate the collection.
	Configuration json.RawMessage `json:"configuration_json"`
	// Metadata is nil when the collection has none.
	Metadata record.Metadata `json:"metadata"`
	// Dimension is nil until the first record is added.
	Dimension   *int   `json:"dimension"`
	Tenant      string `json:"tenant"`
	Database    string `json:"database"`
	LogPosition int64  `json:"log_position"`
	Version     int64  `json:"version"`
}

// CreateCollection describes a collection to create.
type CreateCollection struct {
	// Name must be 3-512 characters of [a-zA-Z0-9._-], starting and ending
	// with a letter or digit (checked by the server).
	Name string
	// Configuration is sent as "configuration" (e.g. a Collection's
	// Configuration); nil means the server's default.
	Configuration json.RawMessage
	// Metadata is set after creation with a separate update (see
	// CreateCollection), unless MetadataOnCreate.
	Metadata record.Metadata
	// GetOrCreate returns an existing collection of that name instead of
	// failing with ErrAlreadyExists. An existing collection's configuration
	// is left alone; its metadata is set only if it has none.
	GetOrCreate bool
	// MetadataOnCreate sends Metadata in the create request, as Chroma's
	// own clients do, so the server derives the configuration from hnsw:*
	// keys when Configuration is the default. Restores must leave it false;
	// it exists to build fixtures that look like application-made data.
	MetadataOnCreate bool
}

// CreateCollection creates a collection in tenant/db.
//
// Chroma derives the configuration from hnsw:* metadata keys when the
// requested configuration equals the default, silently replacing it. So
// the collection is created with the configuration only and the metadata is
// set by a second request; the configuration asked for is what the server
// keeps. If that second request fails the collection exists without
// metadata: retrying with GetOrCreate completes it.
func (c *Client) CreateCollection(ctx context.Context, tenant, db string, req CreateCollection) (*Collection, error) {
	op := "create collection " + quote(req.Name)
	if err := checkNames(op, "tenant", tenant, "database", db, "collection", req.Name); err != nil {
		return nil, err
	}
	body := struct {
		Name          string          `json:"name"`
		Configuration json.RawMessage `json:"configuration,omitempty"`
		Metadata      record.Metadata `json:"metadata,omitempty"`
		GetOrCreate   bool            `json:"get_or_create"`
	}{Name: req.Name, Configuration: req.Configuration, GetOrCreate: req.GetOrCreate}
	if req.MetadataOnCreate && len(req.Metadata) > 0 {
		body.Metadata = req.Metadata
	}
	var col Collection
	if err := c.sendJSON(ctx, op, http.MethodPost, dbPath(tenant, db)+"/collections", body, &col); err != nil {
		return nil, err
	}
	if !req.MetadataOnCreate && len(req.Metadata) > 0 && col.Metadata == nil {
		if err := c.ModifyCollection(ctx, tenant, db, col.ID, nil, req.Metadata); err != nil {
			return nil, fmt.Errorf("chroma: collection %q created without its metadata: %w", req.Name, err)
		}
		col.Metadata = req.Metadata
	}
	return &col, nil
}

// GetCollection returns the collection of that name; ErrNotFound if none.
func (c *Client) GetCollection(ctx context.Context, tenant, db, name string) (*Collection, error) {
	op := "get collection " + quote(name)
	if err := checkNames(op, "tenant", tenant, "database", db, "collection", name); err != nil {
		return nil, err
	}
	var col Collection
	if err := c.getJSON(ctx, op, collPath(tenant, db, name), &col); err != nil {
		return nil, err
	}
	return &col, nil
}

// ListCollections returns every collection of tenant/db, reading pages
// until a short one. The server lists in UUID order by offset; a
// collection deleted while paging can be missed. One created while paging
// shifts the later pages, so that a collection would come back twice: each
// is returned once, as first listed.
func (c *Client) ListCollections(ctx context.Context, tenant, db string) ([]Collection, error) {
	op := "list collections of " + quote(tenant+"/"+db)
	if err := checkNames(op, "tenant", tenant, "database", db); err != nil {
		return nil, err
	}
	var all []Collection
	seen := map[string]bool{}
	for offset := 0; ; offset += c.listPageSize {
		var page []Collection
		path := dbPath(tenant, db) + "/collections?limit=" + strconv.Itoa(c.listPageSize) + "&offset=" + strconv.Itoa(offset)
		if err := c.getJSON(ctx, op, path, &page); err != nil {
			return nil, err
		}
		for _, col := range page {
			if !seen[col.ID] {
				seen[col.ID] = true
				all = append(all, col)
			}
		}
		if len(page) < c.listPageSize {
			return all, nil
		}
	}
}

// ModifyCollection renames a collection (newName non-nil) and/or replaces
// its metadata (newMetadata non-nil; Chroma replaces, it does not merge).
// Chroma cannot clear metadata: an empty non-nil map is refused.
func (c *Client) ModifyCollection(ctx context.Context, tenant, db, id string, newName *string, newMetadata record.Metadata) error {
	op := "modify collection " + id
	if err := checkNames(op, "tenant", tenant, "database", db, "collection id", id); err != nil {
		return err
	}
	if newMetadata != nil && len(newMetadata) == 0 {
		return errors.New("chroma: " + op + ": Chroma refuses empty metadata; pass nil to leave it")
	}
	if newName != nil && *newName == "" {
		return errors.New("chroma: " + op + ": new name must not be empty")
	}
	body := struct {
		NewName     *string         `json:"new_name,omitempty"`
		NewMetadata record.Metadata `json:"new_metadata,omitempty"`
	}{newName, newMetadata}
	return c.sendJSON(ctx, op, http.MethodPut, collPath(tenant, db, id), body, nil)
}

// DeleteCollection deletes the collection of that name and its records;
// ErrNotFound if none.
func (c *Client) DeleteCollection(ctx context.Context, tenant, db, name string) error {
	op := "delete collection " + quote(name)
	if err := checkNames(op, "tenant", tenant, "database", db, "collection", name); err != nil {
		return err
	}
	return c.do(ctx, op, http.MethodDelete, collPath(tenant, db, name), nil, nil)
}

// CountCollections returns the number of collections in tenant/db.
func (c *Client) CountCollections(ctx context.Context, tenant, db string) (int, error) {
	op := "count collections of " + quote(tenant+"/"+db)
	if err := checkNames(op, "tenant", tenant, "database", db); err != nil {
		return 0, err
	}
	var n int
	err := c.getJSON(ctx, op, dbPath(tenant, db)+"/collections_count", &n)
	return n, err
}

// Count returns the number of records in a collection.
func (c *Client) Count(ctx context.Context, tenant, db, collectionID string) (int, error) {
	op := "count records of " + collectionID
	if err := checkNames(op, "tenant", tenant, "database", db, "collection id", collectionID); err != nil {
		return 0, err
	}
	var n int
	err := c.getJSON(ctx, op, collPath(tenant, db, collectionID)+"/count", &n)
	return n, err
}

// CountEach counts the records of each collection of ids, parallel at a
// time: each count is a round trip, and a database of many collections
// need not wait for them one after another. The first failure stops the
// counts not yet started (with Chroma down each would retry to its bound)
// and is returned as a *CountError; a ctx ended before that returns its
// cause.
func (c *Client) CountEach(ctx context.Context, tenant, db string, ids []string, parallel int) ([]int64, error) {
	counts := make([]int64, len(ids))
	cctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	sem := make(chan struct{}, max(parallel, 1))
	var wg sync.WaitGroup
	for i, id := range ids {
		sem <- struct{}{}
		if cctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			n, err := c.Count(cctx, tenant, db, id)
			if err != nil {
				cancel(&CountError{Index: i, Err: err}) // the first cause stays
				return
			}
			counts[i] = int64(n)
		})
	}
	wg.Wait()
	if cctx.Err() != nil {
		return nil, context.Cause(cctx)
	}
	return counts, nil
}

// CountError is a failed count of CountEach: Index is the collection's
// place in its ids.
type CountError struct {
	Index int
	Err   error
}

func (e *CountError) Error() string { return e.Err.Error() }
func (e *CountError) Unwrap() error { return e.Err }

func quote(s string) string { return strconv.Quote(s) }
