package svcmain

import (
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime/debug"
	"strings"
	"testing"
)

func TestInstance(t *testing.T) {
	t.Setenv("INSTANCE", "")
	a := Instance("restorer")
	if !strings.HasPrefix(a, "restorer-") || strings.Count(a, "-") < 2 {
		t.Errorf("default instance %q: want restorer-<host>-<pid>", a)
	}
	t.Setenv("INSTANCE", "restorer-b")
	if got := Instance("restorer"); got != "restorer-b" {
		t.Errorf("INSTANCE set: %q", got)
	}
}

func TestEnvParse(t *testing.T) {
	var errs []error
	t.Setenv("X_INT", "12")
	t.Setenv("X_BAD", "twelve")
	atoi := func(s string) (int, error) {
		var n int
		_, err := fmt.Sscan(s, &n)
		return n, err
	}
	if got := EnvParse(&errs, "X_INT", 3, atoi); got != 12 {
		t.Errorf("X_INT: %d", got)
	}
	if got := EnvParse(&errs, "X_UNSET", 3, atoi); got != 3 {
		t.Errorf("unset: %d", got)
	}
	if got := EnvParse(&errs, "X_BAD", 3, atoi); got != 3 || len(errs) != 1 || !strings.Contains(errs[0].Error(), `X_BAD="twelve"`) {
		t.Errorf("bad: %d %v", got, errs)
	}
}

func TestRedactDefaults(t *testing.T) {
	t.Setenv("CHROMA_URL", "http://app:CRBSECRETchroma@chroma:8000")
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.String("nats-url", "nats://svc:CRBSECRETnats@nats:4222", "")
	var c Chroma
	c.Register(fs, "Chroma")
	RedactDefaults(fs, "nats-url")
	var help strings.Builder
	fs.SetOutput(&help)
	fs.PrintDefaults()
	if strings.Contains(help.String(), "CRBSECRET") || !strings.Contains(help.String(), "svc:xxxxx@nats") {
		t.Errorf("help shows credentials or no URL:\n%s", help.String())
	}
	if c.URL != "http://app:CRBSECRETchroma@chroma:8000" {
		t.Errorf("the value itself must stay usable: %q", c.URL)
	}
}

// TestChromaClient sends the token in the header the settings name, from
// CHROMA_TOKEN, and refuses an unknown header or a missing URL.
func TestChromaClient(t *testing.T) {
	var got http.Header
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Clone()
		w.Write([]byte(`1`))
	}))
	defer srv.Close()
	t.Setenv("CHROMA_TOKEN", "CRBSECRETtoken")
	for _, tc := range []struct {
		header, name, want string
	}{
		{"", "X-Chroma-Token", "CRBSECRETtoken"},
		{"bearer", "Authorization", "Bearer CRBSECRETtoken"},
	} {
		c := Chroma{URL: srv.URL, AuthHeader: tc.header}
		cc, err := c.Client(nil)
		if err != nil {
			t.Fatal(err)
		}
		_ = cc.Heartbeat(t.Context())
		if got.Get(tc.name) != tc.want {
			t.Errorf("auth header %q: sent %v", tc.header, got)
		}
	}
	if _, err := (&Chroma{URL: srv.URL, AuthHeader: "basic"}).Client(nil); err == nil || !strings.Contains(err.Error(), "want x-chroma-token or bearer") {
		t.Errorf("unknown header: %v", err)
	}
	if _, err := (&Chroma{}).Client(nil); err == nil || !strings.Contains(err.Error(), "--chroma-url") {
		t.Errorf("no URL: %v", err)
	}
}

func TestMemoryLimit(t *testing.T) {
	t.Setenv("GOMEMLIMIT", "")
	prev := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(prev) })
	for _, tc := range []struct {
		env  string
		args []string
		want int64
	}{
		{"", nil, 120 << 20},
		{"64", nil, 64 << 20},
		{"64", []string{"-memory-limit-mib", "32"}, 32 << 20},
		{"", []string{"-memory-limit-mib", "0"}, prev}, // none set
	} {
		debug.SetMemoryLimit(prev)
		t.Setenv("MEMORY_LIMIT_MIB", tc.env)
		fs := flag.NewFlagSet("svc", flag.ContinueOnError)
		apply := MemoryLimit(fs, 120)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		apply()
		if got := debug.SetMemoryLimit(-1); got != tc.want {
			t.Errorf("env %q, args %v: limit %d, want %d", tc.env, tc.args, got, tc.want)
		}
	}
}
