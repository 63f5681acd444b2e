package chroma_test

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
)

func TestRedactURL(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"http://127.0.0.1:8000", "http://127.0.0.1:8000"},
		{"https://chroma.example/prefix", "https://chroma.example/prefix"},
		{"http://admin:s3cret@chroma:8000", "http://admin:xxxxx@chroma:8000"},
		{"http://tok3n@chroma:8000/api", "http://xxxxx@chroma:8000/api"},
		{"http://admin:s3c@ret@chroma:8000", "http://admin:xxxxx@chroma:8000"},
		{"http://ad min:s3cret\x7f@chroma", "<unparsable URL, redacted>"},
	} {
		if got := chroma.RedactURL(tc.in); got != tc.want {
			t.Errorf("RedactURL(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// New refuses a bad URL without repeating the credentials in it.
func TestNewErrorsRedactCredentials(t *testing.T) {
	secret := testenv.Secret("url")
	for _, raw := range []string{
		"ftp://admin:" + secret + "@chroma:8000",
		"http://admin:" + secret + "@chroma:8000/?q=1",
		"http://admin:" + secret + "\x7f@chroma",
		"http://" + secret + "@/path",
	} {
		_, err := chroma.New(raw)
		if err == nil {
			t.Errorf("New(%q) succeeded, want an error", raw)
			continue
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("New error holds the secret: %v", err)
		}
	}
}

// With a token the client passes a server that demands one, in either
// header; a wrong token is a 401 APIError that is neither retried nor
// carries the token, and neither outcome logs it.
func TestTokenAuth(t *testing.T) {
	token := testenv.Secret("chroma")
	proxy := testenv.StartChromaAuthProxy(t, server.URL, token)
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	for _, tc := range []struct {
		name   string
		opts   []chroma.Option
		wantOK bool
	}{
		{"x-chroma-token", []chroma.Option{chroma.WithToken(token)}, true},
		{"bearer", []chroma.Option{chroma.WithToken(token), chroma.WithAuthHeader(chroma.AuthBearer)}, true},
		{"no token", nil, false},
		{"wrong token", []chroma.Option{chroma.WithToken(testenv.Secret("wrong"))}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := chroma.New("http://reader:"+token+"@"+strings.TrimPrefix(proxy.URL, "http://"), append(tc.opts, chroma.WithLogger(log))...)
			if err != nil {
				t.Fatal(err)
			}
			refused := proxy.Refused()
			_, err = c.Version(t.Context())
			if tc.wantOK {
				if err != nil {
					t.Fatalf("Version through the proxy: %v", err)
				}
				return
			}
			var ae *chroma.APIError
			if !errors.As(err, &ae) || ae.StatusCode != 401 {
				t.Fatalf("Version with a bad token: %v, want a 401 APIError", err)
			}
			if n := proxy.Refused() - refused; n != 1 {
				t.Errorf("%d requests refused, want 1: a 401 is not retried", n)
			}
			if strings.Contains(err.Error(), token) {
				t.Errorf("the 401 error holds the token: %v", err)
			}
		})
	}
	if strings.Contains(logs.String(), testenv.SecretMarker) {
		t.Errorf("the client logged a secret:\n%s", logs.String())
	}
	if proxy.Passed() != 2 {
		t.Errorf("%d requests reached Chroma, want 2", proxy.Passed())
	}
}
