package contract

import (
	"regexp"
	"testing"
)

// A NATS key holds only these, with no empty token between dots.
var validKey = regexp.MustCompile(`^[-/_=.a-zA-Z0-9]+$`)

// TestScopedKeysOfAnyName: lease and fence keys are valid NATS keys for
// every name Chroma takes, and ParseScopedKey gives the names back.
func TestScopedKeysOfAnyName(t *testing.T) {
	for _, c := range []struct{ tenant, database, fence string }{
		{"acme", "prod", "fence.acme/prod"},
		{"t.with.dots", "db-v2_x", "fence.t.with.dots/db-v2_x"},
		{"acme", "prød", ""},
		{"acme", "sales eu", ""},
		{"x*y", "a>b", ""},
		{".hidden", "db.", ""},
		{"a..b", "=x", ""},
	} {
		key := FenceKey(c.tenant, c.database)
		if c.fence != "" && key != c.fence {
			t.Errorf("FenceKey(%q, %q) = %q, want %q (plain names keep their keys)", c.tenant, c.database, key, c.fence)
		}
		for _, k := range []string{key, LeaseKey(c.tenant, c.database)} {
			if !validKey.MatchString(k) || regexp.MustCompile(`\.\.|\.$`).MatchString(k) {
				t.Errorf("%q/%q: key %q is not a valid NATS key", c.tenant, c.database, k)
			}
			_, tenant, database, err := ParseScopedKey(k)
			if err != nil || tenant != c.tenant || database != c.database {
				t.Errorf("ParseScopedKey(%q) = %q, %q, %v; want %q, %q", k, tenant, database, err, c.tenant, c.database)
			}
		}
	}
	if _, _, _, err := ParseScopedKey("fence.acme/=!!"); err == nil {
		t.Error("ParseScopedKey took a name that is not base64url after '='")
	}
}

// TestLeaseKeyOnAnotherServer: the own Chroma's lease key is LeaseKey; a
// database of the same name on another server has a key of its own.
func TestLeaseKeyOnAnotherServer(t *testing.T) {
	if got, want := LeaseKeyOn("", "acme", "prod"), LeaseKey("acme", "prod"); got != want {
		t.Errorf("LeaseKeyOn(\"\") = %q, want %q", got, want)
	}
	a, b := LeaseKeyOn("http://staging:8000", "acme", "prod"), LeaseKeyOn("http://other:8000", "acme", "prod")
	if a == LeaseKey("acme", "prod") || a == b || !validKey.MatchString(a) {
		t.Errorf("leases of acme/prod on other servers: %q and %q (own %q)", a, b, LeaseKey("acme", "prod"))
	}
}
