package deploytest

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/metrics"
)

// Every standalone service takes --metrics-listen; with its own user of
// deploy/nats/accounts.conf its scrape must read what its gauges need,
// without a permission violation: the auditor's user reads no bucket, so
// it reports the audit lag only.
func TestDeployMetricsScrape(t *testing.T) {
	url, pw := startSingle(t)
	snap := connect(t, url, pw, "snapshotter")
	bootstrap(t, snap)
	for _, user := range []string{"snapshotter", "restorer", "watchdog", "auditor"} {
		t.Run(user, func(t *testing.T) {
			c := connect(t, url, pw, user)
			// As each cmd/<service>/main.go opens it.
			ep, err := metrics.OpenEndpoint(metrics.EndpointOptions{Listen: "127.0.0.1:0", NATS: c.nc,
				State: metrics.StateOptions{AuditOnly: user == "auditor"}})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan struct{})
			go func() { defer close(done); _ = ep.Run(ctx) }()
			defer func() { cancel(); <-done }()
			start := time.Now()
			resp, err := http.Get("http://" + ep.Addr().String() + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if !strings.Contains(string(body), "\nchromadb_rollback_state_scrape_ok 1\n") {
				t.Errorf("as %s the scrape (%s) could not read the state: %s", user, time.Since(start).Round(time.Millisecond),
					grepLines(string(body), "chromadb_rollback_state_scrape_ok", "chromadb_rollback_audit_lag"))
			}
			c.noViolations(t)
		})
	}
}

func grepLines(s string, prefixes ...string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		for _, p := range prefixes {
			if strings.HasPrefix(l, p) {
				out = append(out, l)
			}
		}
	}
	return strings.Join(out, "; ")
}
