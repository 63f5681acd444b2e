package restorer

import (
	"context"
	"net"
	"net/url"
	"strings"
	"time"
)

// resolveTimeout bounds the DNS lookups of sameServer.
const resolveTimeout = 2 * time.Second

// sameServer reports whether the normalized URLs a and b reach the same
// Chroma: the same scheme, port (the scheme's default when none is given)
// and path, and hosts that are equal or resolve to a common address. So
// http://localhost:8000 and http://127.0.0.1:8000/ are one server: a
// rollback given either must take the same lease, and on the restorer's
// own Chroma raise its fence and take its safety snapshot, or an alias
// would let two rollbacks write one database at once, unfenced.
func sameServer(ctx context.Context, a, b string) bool {
	sa, okA := parseServer(a)
	sb, okB := parseServer(b)
	return a == b || okA && okB && sa.same(ctx, sb)
}

// server is a URL as sameServer compares it; its host's addresses are
// looked up once, when a comparison first needs them.
type server struct {
	scheme, port, path, host string
	ips                      []net.IP
	resolved                 bool
}

func parseServer(raw string) (*server, bool) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, false
	}
	return &server{scheme: u.Scheme, port: urlPort(u), path: strings.TrimRight(u.EscapedPath(), "/"), host: strings.ToLower(u.Hostname())}, true
}

func (a *server) same(ctx context.Context, b *server) bool {
	if a.scheme != b.scheme || a.port != b.port || a.path != b.path {
		return false
	}
	if a.host == b.host {
		return true
	}
	for _, x := range a.addrs(ctx) {
		for _, y := range b.addrs(ctx) {
			if x.Equal(y) {
				return true
			}
		}
	}
	return false
}

func (s *server) addrs(ctx context.Context) []net.IP {
	if !s.resolved {
		ctx, cancel := context.WithTimeout(ctx, resolveTimeout)
		s.ips, s.resolved = resolveHost(ctx, s.host), true
		cancel()
	}
	return s.ips
}

// urlPort is u's port, or its scheme's default.
func urlPort(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	if u.Scheme == "https" {
		return "443"
	}
	return "80"
}

// resolveHost is the addresses of host: itself when it is an IP address,
// none when it does not resolve (then it matches only by name).
func resolveHost(ctx context.Context, host string) []net.IP {
	if ip := net.ParseIP(host); ip != nil {
		return []net.IP{ip}
	}
	addrs, err := net.DefaultResolver.LookupIPAddr(ctx, host)
	if err != nil {
		return nil
	}
	ips := make([]net.IP, 0, len(addrs))
	for _, a := range addrs {
		ips = append(ips, a.IP)
	}
	return ips
}
