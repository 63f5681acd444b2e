package gate

import (
	"net/http"
	"net/url"
	"strings"
)

// Scope says which fences a write is subject to.
type Scope int

const (
	// ScopeNone is a read: it is never refused.
	ScopeNone Scope = iota
	// ScopeDatabase is a write to one tenant/database: refused while that
	// database's fence is raised.
	ScopeDatabase
	// ScopeTenant is a write that names a tenant but not which database it
	// touches (deleting a tenant, an unknown endpoint under a tenant, a
	// database creation whose body cannot be read): refused while any
	// database of the tenant is fenced.
	ScopeTenant
	// ScopeServer is a write that destroys every database (reset): refused
	// while any fence is raised.
	ScopeServer
	// ScopeUnscoped is a write that touches no existing database's data, or
	// whose database cannot be determined at all (creating or renaming a
	// tenant, an unknown path naming no tenant): refused only with
	// WithFenceAllWritesWhenAnyFence.
	ScopeUnscoped
)

func (s Scope) String() string {
	switch s {
	case ScopeNone:
		return "none"
	case ScopeDatabase:
		return "database"
	case ScopeTenant:
		return "tenant"
	case ScopeServer:
		return "server"
	case ScopeUnscoped:
		return "unscoped"
	}
	return "unknown"
}

// Class is what the gate knows about a request.
type Class struct {
	// Write is true for a request that may change data.
	Write bool
	// Scope is ScopeNone for reads.
	Scope Scope
	// Tenant and Database are taken from the path ("" when it names none).
	Tenant, Database string
	// Endpoint names the Chroma operation, e.g. "records.add",
	// "collection.create"; "unknown" for a path the gate does not know.
	Endpoint string
	// DatabaseInBody is set for database creation: the new database's name
	// is in the JSON body ({"name": ...}), which the gate reads to narrow
	// the scope from ScopeTenant to ScopeDatabase.
	DatabaseInBody bool
}

// EndpointUnknown names a path the classifier does not know.
const EndpointUnknown = "unknown"

// Path parameters of the route patterns.
const (
	pTenant     = "{tenant}"
	pDatabase   = "{database}"
	pCollection = "{collection}"
)

type route struct {
	method   string
	pattern  []string // segments after /api/v2
	write    bool
	scope    Scope
	endpoint string
	inBody   bool
}

func mk(method, pattern string, write bool, scope Scope, endpoint string) route {
	return route{method: method, pattern: strings.Split(pattern, "/"), write: write, scope: scope, endpoint: endpoint}
}

const coll = "tenants/{tenant}/databases/{database}/collections/{collection}"

// routes are Chroma's v2 API (server 1.0, from its /openapi.json) and the
// endpoints later 1.x servers added that the gate must not mistake.
var routes = []route{
	mk(http.MethodGet, "heartbeat", false, ScopeNone, "server.heartbeat"),
	mk(http.MethodGet, "version", false, ScopeNone, "server.version"),
	mk(http.MethodGet, "pre-flight-checks", false, ScopeNone, "server.pre_flight_checks"),
	mk(http.MethodGet, "healthcheck", false, ScopeNone, "server.healthcheck"),
	mk(http.MethodGet, "auth/identity", false, ScopeNone, "auth.identity"),
	mk(http.MethodPost, "reset", true, ScopeServer, "server.reset"),

	mk(http.MethodPost, "tenants", true, ScopeUnscoped, "tenant.create"),
	mk(http.MethodGet, "tenants/{tenant}", false, ScopeNone, "tenant.get"),
	mk(http.MethodPatch, "tenants/{tenant}", true, ScopeUnscoped, "tenant.update"),
	mk(http.MethodDelete, "tenants/{tenant}", true, ScopeTenant, "tenant.delete"),

	mk(http.MethodGet, "tenants/{tenant}/databases", false, ScopeNone, "database.list"),
	{method: http.MethodPost, pattern: strings.Split("tenants/{tenant}/databases", "/"), write: true, scope: ScopeTenant, endpoint: "database.create", inBody: true},
	mk(http.MethodGet, "tenants/{tenant}/databases/{database}", false, ScopeNone, "database.get"),
	mk(http.MethodDelete, "tenants/{tenant}/databases/{database}", true, ScopeDatabase, "database.delete"),

	mk(http.MethodGet, "tenants/{tenant}/databases/{database}/collections", false, ScopeNone, "collection.list"),
	mk(http.MethodPost, "tenants/{tenant}/databases/{database}/collections", true, ScopeDatabase, "collection.create"),
	mk(http.MethodGet, "tenants/{tenant}/databases/{database}/collections_count", false, ScopeNone, "collection.count"),
	mk(http.MethodGet, coll, false, ScopeNone, "collection.get"),
	mk(http.MethodPut, coll, true, ScopeDatabase, "collection.update"),
	mk(http.MethodDelete, coll, true, ScopeDatabase, "collection.delete"),
	mk(http.MethodPost, coll+"/fork", true, ScopeDatabase, "collection.fork"),
	mk(http.MethodGet, coll+"/indexing_status", false, ScopeNone, "collection.indexing_status"),

	mk(http.MethodPost, coll+"/add", true, ScopeDatabase, "records.add"),
	mk(http.MethodPost, coll+"/update", true, ScopeDatabase, "records.update"),
	mk(http.MethodPost, coll+"/upsert", true, ScopeDatabase, "records.upsert"),
	mk(http.MethodPost, coll+"/delete", true, ScopeDatabase, "records.delete"),
	mk(http.MethodPost, coll+"/get", false, ScopeNone, "records.get"),
	mk(http.MethodPost, coll+"/query", false, ScopeNone, "records.query"),
	mk(http.MethodPost, coll+"/search", false, ScopeNone, "records.search"),
	mk(http.MethodGet, coll+"/count", false, ScopeNone, "records.count"),
	mk(http.MethodPost, coll+"/count", false, ScopeNone, "records.count"),
}

// readMethods never change anything, whatever the path.
func readMethod(method string) bool {
	return method == http.MethodGet || method == http.MethodHead || method == http.MethodOptions
}

// Classify tells a read from a write and finds the tenant and database a
// request touches. escapedPath is the request's path as sent
// (r.URL.EscapedPath()); query holds its query parameters (may be nil).
//
// GET, HEAD and OPTIONS are reads whatever the path. Other methods are
// matched against Chroma's v2 routes; a path the gate does not know is a
// write, scoped to the tenant/database it names (in the path, or in
// "tenant" and "database" query parameters as the v1 API had them), so an
// endpoint added by a later Chroma is fenced rather than let through.
//
// Path segments are percent-decoded and dot segments resolved before
// matching, and empty segments are ignored, so no spelling of a path is
// classified more leniently than the server would route it.
func Classify(method, escapedPath string, query url.Values) Class {
	segs := splitPath(escapedPath)
	match := method
	if method == http.MethodHead {
		match = http.MethodGet
	}
	if len(segs) >= 2 && segs[0] == "api" && segs[1] == "v2" {
		for _, rt := range routes {
			if rt.method != match {
				continue
			}
			c, ok := rt.match(segs[2:])
			if !ok {
				continue
			}
			if readMethod(method) {
				c.Write, c.Scope, c.DatabaseInBody = false, ScopeNone, false
			}
			return c
		}
	}
	c := Class{Endpoint: EndpointUnknown}
	c.Tenant, c.Database = scopeOf(segs, query)
	if readMethod(method) {
		return c
	}
	c.Write = true
	switch {
	case c.Database != "":
		c.Scope = ScopeDatabase
	case c.Tenant != "":
		c.Scope = ScopeTenant
	default:
		c.Scope = ScopeUnscoped
	}
	return c
}

func (rt route) match(segs []string) (Class, bool) {
	if len(segs) != len(rt.pattern) {
		return Class{}, false
	}
	c := Class{Write: rt.write, Scope: rt.scope, Endpoint: rt.endpoint, DatabaseInBody: rt.inBody}
	for i, p := range rt.pattern {
		s := segs[i]
		switch p {
		case pTenant:
			c.Tenant = s
		case pDatabase:
			c.Database = s
		case pCollection:
		default:
			if s != p {
				return Class{}, false
			}
		}
	}
	return c, true
}

// splitPath percent-decodes each segment, drops empty ones and resolves "."
// and "..". A segment that does not decode is kept as sent.
func splitPath(escaped string) []string {
	raw := strings.Split(escaped, "/")
	segs := make([]string, 0, len(raw))
	for _, s := range raw {
		if u, err := url.PathUnescape(s); err == nil {
			s = u
		}
		switch s {
		case "", ".":
		case "..":
			if len(segs) > 0 {
				segs = segs[:len(segs)-1]
			}
		default:
			segs = append(segs, s)
		}
	}
	return segs
}

// scopeOf finds the tenant and database an unknown path names: the
// segments after "tenants" and "databases", else the query parameters.
func scopeOf(segs []string, query url.Values) (tenant, database string) {
	for i := 0; i+1 < len(segs); i++ {
		if segs[i] != "tenants" {
			continue
		}
		tenant = segs[i+1]
		if i+3 < len(segs) && segs[i+2] == "databases" {
			database = segs[i+3]
		}
		return tenant, database
	}
	tenant, database = query.Get("tenant"), query.Get("database")
	if tenant == "" {
		// Chroma's default tenant, as the v1 API assumed.
		if database == "" {
			return "", ""
		}
		tenant = "default_tenant"
	}
	return tenant, database
}
