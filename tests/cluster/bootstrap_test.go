package cluster

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/bus"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
	"github.com/nats-io/nats.go/jetstream"
)

// assetStreams are the streams behind every asset Bootstrap creates.
var assetStreams = []string{contract.StreamCommands, contract.StreamMigrations, contract.StreamAudit,
	"KV_" + contract.BucketManifests, "KV_" + contract.BucketState, "OBJ_" + contract.ObjectSnapshots}

// Every service's user bootstraps at the same moment, R3, on a cluster
// where an older single-node deployment left CHROMA_AUDIT at R1 with a
// short retention: all four succeed, every stream, bucket and the object
// store ends R3 with a leader and two current replicas, and the audit
// stream is updated to the requested settings.
func TestBootstrapConcurrentR3(t *testing.T) {
	pw := testenv.SetDeployPasswords(t)
	cl := testenv.StartCluster(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	users := []string{"snapshotter", "restorer", "watchdog", "auditor"}
	js := map[string]jetstream.JetStream{}
	for _, u := range users {
		j, err := jetstream.New(cl.Connect(t, pw.Config(u)))
		if err != nil {
			t.Fatal(err)
		}
		js[u] = j
	}
	if _, err := js["snapshotter"].CreateStream(ctx, jetstream.StreamConfig{Name: contract.StreamAudit, Subjects: []string{subj.AuditAll()},
		Storage: jetstream.FileStorage, Replicas: 1, MaxAge: 24 * time.Hour}); err != nil {
		t.Fatal(err)
	}

	var wg sync.WaitGroup
	errs := make([]error, len(users))
	for i, u := range users {
		wg.Go(func() {
			_, errs[i] = bus.Bootstrap(ctx, js[u], bus.Config{Subjects: subj, Replicas: 3})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("bootstrap as %s: %v", users[i], err)
		}
	}
	for _, name := range assetStreams {
		waitReplicated(t, js["snapshotter"], name, 3)
	}
	s, err := js["snapshotter"].Stream(ctx, contract.StreamAudit)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.CachedInfo().Config; got.MaxAge != 400*24*time.Hour || !got.DenyDelete || !got.DenyPurge {
		t.Errorf("CHROMA_AUDIT after bootstrap: max age %s, deny delete %v, deny purge %v; want 400 days and both denied",
			got.MaxAge, got.DenyDelete, got.DenyPurge)
	}
}

// waitReplicated waits until stream has replicas peers, all current.
func waitReplicated(t *testing.T, js jetstream.JetStream, stream string, replicas int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var problem string
		s, err := js.Stream(t.Context(), stream)
		if err != nil {
			problem = err.Error()
		} else {
			info := s.CachedInfo()
			switch {
			case info.Config.Replicas != replicas:
				problem = fmt.Sprintf("configured with %d replicas", info.Config.Replicas)
			case info.Cluster == nil || info.Cluster.Leader == "":
				problem = "no leader"
			case len(info.Cluster.Replicas) != replicas-1:
				problem = fmt.Sprintf("%d replicas besides the leader", len(info.Cluster.Replicas))
			default:
				for _, r := range info.Cluster.Replicas {
					if !r.Current {
						problem = "replica " + r.Name + " not current"
					}
				}
			}
		}
		if problem == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("stream %s: %s, want %d current replicas", stream, problem, replicas)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Bootstrap says plainly what it cannot do: replicate on a server that is
// not clustered, or change a stream that exists with settings the server
// does not change in place (here CHROMA_CMDS made with limits retention
// instead of a work queue). Each error names the asset and what to do.
func TestBootstrapRefusals(t *testing.T) {
	pw := testenv.SetDeployPasswords(t)
	srv := testenv.StartDeployServer(t, "single.conf")
	nc, err := pw.Config("snapshotter").Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	_, err = bus.Bootstrap(ctx, js, bus.Config{Subjects: subj, Replicas: 3})
	if err == nil || !strings.Contains(err.Error(), "not clustered") || !strings.Contains(err.Error(), "--replicas 1") {
		t.Errorf("bootstrap with 3 replicas on one server: %v; want it to say the server is not clustered and to use --replicas 1", err)
	}

	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: contract.StreamCommands, Subjects: []string{subj.Commands()},
		Retention: jetstream.LimitsPolicy}); err != nil {
		t.Fatal(err)
	}
	_, err = bus.Bootstrap(ctx, js, bus.Config{Subjects: subj})
	if err == nil || !strings.Contains(err.Error(), "stream CHROMA_CMDS exists with settings") ||
		!strings.Contains(err.Error(), "nats stream info CHROMA_CMDS") || !strings.Contains(err.Error(), "retention") {
		t.Errorf("bootstrap over CHROMA_CMDS with limits retention: %v; want the stream, the setting and what to do named", err)
	}

	for _, tc := range []struct {
		in   string
		want int
	}{{"1", 1}, {"3", 3}, {" 5 ", 5}, {"0", 0}, {"6", 0}, {"-1", 0}, {"three", 0}, {"", 0}} {
		got, err := bus.ParseReplicas(tc.in)
		if got != tc.want || (err == nil) != (tc.want > 0) {
			t.Errorf("ParseReplicas(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
		if err != nil && !strings.Contains(err.Error(), "--replicas") {
			t.Errorf("ParseReplicas(%q): %v does not name the flag", tc.in, err)
		}
	}
}
