package deploytest

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/metrics"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
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

// The services' audit_lag_messages in deploy/k8s reads the consumers the
// auditor StatefulSet's pods make (one per pod, named after it): with
// the default "auditor", which no pod makes, the gauge would stay 0.
func TestDeployK8sAuditConsumers(t *testing.T) {
	dir := testenv.DeployDir(t)
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(dir, "k8s", name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	m := regexp.MustCompile(`(?m)^\s+replicas:\s*(\d+)\s*$`).FindStringSubmatch(read("auditor.yaml"))
	if m == nil {
		t.Fatal("k8s/auditor.yaml: no replicas")
	}
	replicas, _ := strconv.Atoi(m[1])
	var pods []string
	for i := range replicas {
		pods = append(pods, fmt.Sprintf("auditor-%d", i))
	}
	c := regexp.MustCompile(`(?m)^\s+AUDIT_CONSUMERS:\s*(\S+)\s*$`).FindStringSubmatch(read("configmap.yaml"))
	if c == nil || c[1] != strings.Join(pods, ",") {
		t.Errorf("k8s/configmap.yaml AUDIT_CONSUMERS = %v, want %s (the auditor pods' consumers)", c, strings.Join(pods, ","))
	}
	if !strings.Contains(read("auditor.yaml"), "- name: AUDIT_CONSUMER\n              valueFrom:\n                fieldRef:\n                  fieldPath: metadata.name") {
		t.Error("k8s/auditor.yaml no longer names each pod's consumer after the pod")
	}
}
