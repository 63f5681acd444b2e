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
	if a == b {
		return true
	}
	ua, errA := url.Parse(a)
	ub, errB := url.Parse(b)
	if errA != nil || errB != nil || ua.Scheme != ub.Scheme || urlPort(ua) != urlPort(ub) ||
		strings.TrimRight(ua.EscapedPath(), "/") != strings.TrimRight(ub.EscapedPath(), "/") {
		return false
	}
	ha, hb := strings.ToLower(ua.Hostname()), strings.ToLower(ub.Hostname())
	if ha == hb {
		return true
	}
	ctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	defer cancel()
	ipsA, ipsB := resolveHost(ctx, ha), resolveHost(ctx, hb)
	for _, x := range ipsA {
		for _, y := range ipsB {
			if x.Equal(y) {
				return true
			}
		}
	}
	return false
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
