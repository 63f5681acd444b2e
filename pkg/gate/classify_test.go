package gate

import (
	"net/url"
	"testing"
)

func TestClassify(t *testing.T) {
	const (
		db   = "/api/v2/tenants/acme/databases/prod"
		coll = db + "/collections/0b5c2d6e-7f3a-4c1e-9f0a-1d2e3f4a5b6c"
	)
	type want struct {
		write    bool
		scope    Scope
		tenant   string
		database string
		endpoint string
		inBody   bool
	}
	read := func(endpoint, tenant, database string) want {
		return want{false, ScopeNone, tenant, database, endpoint, false}
	}
	writeDB := func(endpoint string) want { return want{true, ScopeDatabase, "acme", "prod", endpoint, false} }
	cases := []struct {
		method, path string
		query        url.Values
		want         want
	}{
		// Server-wide reads.
		{"GET", "/api/v2/heartbeat", nil, read("server.heartbeat", "", "")},
		{"GET", "/api/v2/version", nil, read("server.version", "", "")},
		{"GET", "/api/v2/pre-flight-checks", nil, read("server.pre_flight_checks", "", "")},
		{"GET", "/api/v2/healthcheck", nil, read("server.healthcheck", "", "")},
		{"GET", "/api/v2/auth/identity", nil, read("auth.identity", "", "")},
		{"HEAD", "/api/v2/heartbeat", nil, read("server.heartbeat", "", "")},
		{"OPTIONS", db + "/collections", nil, read(EndpointUnknown, "acme", "prod")},
		{"GET", "/openapi.json", nil, read(EndpointUnknown, "", "")},
		{"GET", "/docs", nil, read(EndpointUnknown, "", "")},
		// Reset destroys every database.
		{"POST", "/api/v2/reset", nil, want{true, ScopeServer, "", "", "server.reset", false}},
		// Tenants.
		{"POST", "/api/v2/tenants", nil, want{true, ScopeUnscoped, "", "", "tenant.create", false}},
		{"GET", "/api/v2/tenants/acme", nil, read("tenant.get", "acme", "")},
		{"PATCH", "/api/v2/tenants/acme", nil, want{true, ScopeUnscoped, "acme", "", "tenant.update", false}},
		{"DELETE", "/api/v2/tenants/acme", nil, want{true, ScopeTenant, "acme", "", "tenant.delete", false}},
		// Databases.
		{"GET", "/api/v2/tenants/acme/databases", nil, read("database.list", "acme", "")},
		{"POST", "/api/v2/tenants/acme/databases", nil, want{true, ScopeTenant, "acme", "", "database.create", true}},
		{"GET", db, nil, read("database.get", "acme", "prod")},
		{"DELETE", db, nil, writeDB("database.delete")},
		{"PATCH", db, nil, want{true, ScopeDatabase, "acme", "prod", EndpointUnknown, false}},
		// Collections.
		{"GET", db + "/collections", nil, read("collection.list", "acme", "prod")},
		{"GET", db + "/collections?limit=100&offset=200", nil, read("collection.list", "acme", "prod")},
		{"POST", db + "/collections", nil, writeDB("collection.create")},
		{"GET", db + "/collections_count", nil, read("collection.count", "acme", "prod")},
		{"GET", coll, nil, read("collection.get", "acme", "prod")},
		{"GET", db + "/collections/corpus.v1", nil, read("collection.get", "acme", "prod")},
		{"PUT", coll, nil, writeDB("collection.update")},
		{"DELETE", coll, nil, writeDB("collection.delete")},
		{"DELETE", db + "/collections/corpus.v1", nil, writeDB("collection.delete")},
		{"POST", coll + "/fork", nil, writeDB("collection.fork")},
		{"GET", coll + "/indexing_status", nil, read("collection.indexing_status", "acme", "prod")},
		// Records.
		{"POST", coll + "/add", nil, writeDB("records.add")},
		{"POST", coll + "/update", nil, writeDB("records.update")},
		{"POST", coll + "/upsert", nil, writeDB("records.upsert")},
		{"POST", coll + "/delete", nil, writeDB("records.delete")},
		{"POST", coll + "/get", nil, read("records.get", "acme", "prod")},
		{"POST", coll + "/query", nil, read("records.query", "acme", "prod")},
		{"POST", coll + "/search", nil, read("records.search", "acme", "prod")},
		{"GET", coll + "/count", nil, read("records.count", "acme", "prod")},
		{"POST", coll + "/count", nil, read("records.count", "acme", "prod")},
		// A read verb with a write method, or a write verb with GET.
		{"PUT", coll + "/get", nil, writeDB(EndpointUnknown)},
		{"GET", coll + "/add", nil, read(EndpointUnknown, "acme", "prod")},
		// Unknown endpoints are writes scoped to what the path names.
		{"POST", coll + "/attached_functions", nil, writeDB(EndpointUnknown)},
		{"POST", db + "/something_new", nil, writeDB(EndpointUnknown)},
		{"PROPFIND", coll, nil, writeDB(EndpointUnknown)},
		{"POST", "/api/v2/tenants/acme/whatever", nil, want{true, ScopeTenant, "acme", "", EndpointUnknown, false}},
		{"POST", "/api/v3/tenants/acme/databases/prod/collections/x/add", nil, writeDB(EndpointUnknown)},
		{"POST", "/api/v2/something", nil, want{true, ScopeUnscoped, "", "", EndpointUnknown, false}},
		// v1 named the database in the query.
		{"POST", "/api/v1/collections", url.Values{"tenant": {"acme"}, "database": {"prod"}}, writeDB(EndpointUnknown)},
		{"POST", "/api/v1/collections", url.Values{"database": {"prod"}},
			want{true, ScopeDatabase, "default_tenant", "prod", EndpointUnknown, false}},
		{"POST", "/api/v1/collections/abc/add", nil, want{true, ScopeUnscoped, "", "", EndpointUnknown, false}},
		// Other spellings of the same path are classified the same way.
		{"POST", coll + "/add/", nil, writeDB("records.add")},
		{"POST", "/api/v2//tenants/acme/databases/prod/collections/x/add", nil, writeDB("records.add")},
		{"POST", "/api/v2/tenants/acme/databases/other/../prod/collections/x/add", nil, writeDB("records.add")},
		{"POST", "/api/v2/tenants/acme/databases/prod/collections/x/get/../add", nil, writeDB("records.add")},
		{"POST", "/api/v2/tenants/acme/databases/prod/collections/x/./add", nil, writeDB("records.add")},
		{"POST", "/api/v2/%74enants/acme/databases/%70rod/collections/x/%61dd", nil, writeDB("records.add")},
		{"POST", "/api/v2/tenants/acme/databases/prod/collections/x/%2E%2E/y/add", nil, writeDB("records.add")},
		// Names are percent-decoded and may hold dots and any Unicode.
		{"POST", "/api/v2/tenants/t.1/databases/db%20%C3%A9.x/collections/c/upsert", nil,
			want{true, ScopeDatabase, "t.1", "db é.x", "records.upsert", false}},
	}
	for _, tc := range cases {
		u, err := url.Parse(tc.path)
		if err != nil {
			t.Fatalf("%s: %v", tc.path, err)
		}
		q := tc.query
		if q == nil {
			q = u.Query()
		}
		got := Classify(tc.method, u.EscapedPath(), q)
		g := want{got.Write, got.Scope, got.Tenant, got.Database, got.Endpoint, got.DatabaseInBody}
		if g != tc.want {
			t.Errorf("%s %s:\n got  %+v\n want %+v", tc.method, tc.path, g, tc.want)
		}
	}
}

// Every route of the table is reachable, and every write route is scoped.
func TestClassifyRoutesReachable(t *testing.T) {
	for _, rt := range routes {
		path := "/api/v2"
		for _, p := range rt.pattern {
			switch p {
			case pTenant:
				p = "t"
			case pDatabase:
				p = "d"
			case pCollection:
				p = "c"
			}
			path += "/" + p
		}
		c := Classify(rt.method, path, nil)
		if c.Endpoint != rt.endpoint {
			t.Errorf("%s %s reaches %q, want %q", rt.method, path, c.Endpoint, rt.endpoint)
		}
		if c.Write != rt.write {
			t.Errorf("%s %s: write=%v", rt.method, path, c.Write)
		}
		if c.Write && c.Scope == ScopeNone {
			t.Errorf("%s %s: a write without a scope", rt.method, path)
		}
	}
}
