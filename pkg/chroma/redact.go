package chroma

import (
	"net/url"
	"strings"
)

// redacted replaces credentials in printed URLs.
const redacted = "xxxxx"

// RedactURL returns raw with any credentials in its user part (a password,
// or a user alone, which may be a token) replaced by xxxxx, for logs, audit
// events, manifests and errors. The client never sends them (it drops the
// user part: the token goes in a header, WithToken), so they only leak. A
// URL with an "@" that does not parse is replaced whole.
func RedactURL(raw string) string {
	if !strings.Contains(raw, "@") {
		return raw
	}
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil {
		return "<unparsable URL, redacted>"
	}
	if u.User == nil {
		return u.String()
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), redacted)
	} else {
		u.User = url.User(redacted)
	}
	return u.String()
}
