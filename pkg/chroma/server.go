package chroma

import (
	"context"
	"net/http"
)

// Preflight is the server's advice to clients, from /api/v2/pre-flight-checks.
type Preflight struct {
	// MaxBatchSize is the advised maximum number of records per write.
	MaxBatchSize int `json:"max_batch_size"`
	// SupportsBase64Encoding says embeddings may be sent base64-encoded.
	SupportsBase64Encoding bool `json:"supports_base64_encoding"`
}

// Tenant is a Chroma tenant.
type Tenant struct {
	Name string `json:"name"`
}

// Database is a database of a tenant.
type Database struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Tenant string `json:"tenant"`
}

// Heartbeat checks that the server answers.
func (c *Client) Heartbeat(ctx context.Context) error {
	var out map[string]any
	return c.getJSON(ctx, "heartbeat", "/api/v2/heartbeat", &out)
}

// Version returns the server version, e.g. "1.0.0".
func (c *Client) Version(ctx context.Context) (string, error) {
	var v string
	err := c.getJSON(ctx, "version", "/api/v2/version", &v)
	return v, err
}

// PreflightChecks returns the server's batch size and encoding advice.
func (c *Client) PreflightChecks(ctx context.Context) (Preflight, error) {
	var p Preflight
	err := c.getJSON(ctx, "pre-flight checks", "/api/v2/pre-flight-checks", &p)
	return p, err
}

// cachedPreflight fetches the pre-flight checks once per client.
func (c *Client) cachedPreflight(ctx context.Context) (Preflight, error) {
	c.mu.Lock()
	p := c.preflight
	c.mu.Unlock()
	if p != nil {
		return *p, nil
	}
	got, err := c.PreflightChecks(ctx)
	if err != nil {
		return Preflight{}, err
	}
	c.mu.Lock()
	c.preflight = &got
	c.mu.Unlock()
	return got, nil
}

// CreateTenant creates a tenant; ErrAlreadyExists if it exists.
func (c *Client) CreateTenant(ctx context.Context, name string) error {
	op := "create tenant " + quote(name)
	if err := checkNames(op, "tenant", name); err != nil {
		return err
	}
	return c.sendJSON(ctx, op, http.MethodPost, "/api/v2/tenants", Tenant{Name: name}, nil)
}

// GetTenant returns a tenant; ErrNotFound if it does not exist.
func (c *Client) GetTenant(ctx context.Context, name string) (*Tenant, error) {
	op := "get tenant " + quote(name)
	if err := checkNames(op, "tenant", name); err != nil {
		return nil, err
	}
	var t Tenant
	if err := c.getJSON(ctx, op, tenantPath(name), &t); err != nil {
		return nil, err
	}
	return &t, nil
}

// CreateDatabase creates a database; ErrAlreadyExists if it exists.
// Chroma 1.0 does not check that the tenant exists.
func (c *Client) CreateDatabase(ctx context.Context, tenant, name string) error {
	op := "create database " + quote(tenant+"/"+name)
	if err := checkNames(op, "tenant", tenant, "database", name); err != nil {
		return err
	}
	body := struct {
		Name string `json:"name"`
	}{name}
	return c.sendJSON(ctx, op, http.MethodPost, tenantPath(tenant)+"/databases", body, nil)
}

// GetDatabase returns a database; ErrNotFound if it does not exist.
func (c *Client) GetDatabase(ctx context.Context, tenant, name string) (*Database, error) {
	op := "get database " + quote(tenant+"/"+name)
	if err := checkNames(op, "tenant", tenant, "database", name); err != nil {
		return nil, err
	}
	var d Database
	if err := c.getJSON(ctx, op, dbPath(tenant, name), &d); err != nil {
		return nil, err
	}
	return &d, nil
}

// ListDatabases returns the databases of a tenant.
func (c *Client) ListDatabases(ctx context.Context, tenant string) ([]Database, error) {
	op := "list databases of " + quote(tenant)
	if err := checkNames(op, "tenant", tenant); err != nil {
		return nil, err
	}
	var ds []Database
	if err := c.getJSON(ctx, op, tenantPath(tenant)+"/databases", &ds); err != nil {
		return nil, err
	}
	return ds, nil
}

// DeleteDatabase deletes a database and its collections; ErrNotFound if it
// does not exist.
func (c *Client) DeleteDatabase(ctx context.Context, tenant, name string) error {
	op := "delete database " + quote(tenant+"/"+name)
	if err := checkNames(op, "tenant", tenant, "database", name); err != nil {
		return err
	}
	return c.do(ctx, op, http.MethodDelete, dbPath(tenant, name), nil, nil)
}
