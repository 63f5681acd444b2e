package deploytest

import (
	"context"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/bus"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
	"github.com/nats-io/nats.go/jetstream"
)

// The three node configs form a JetStream cluster: the snapshotter's user
// bootstraps every asset with 3 replicas, each gets a leader and two
// current followers, and the assets keep a leader while a node is down and
// after it is back (testenv.Cluster's Kill and Restart, which the fault
// injection tests build on).
func TestDeployCluster(t *testing.T) {
	pw := testenv.SetDeployPasswords(t)
	c := testenv.StartCluster(t)
	nc := c.Connect(t, pw.Config("snapshotter"))
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if _, err := bus.Bootstrap(ctx, js, bus.Config{Subjects: subj, Replicas: 3}); err != nil {
		t.Fatalf("bootstrap with 3 replicas: %v", err)
	}
	streams := []string{contract.StreamCommands, contract.StreamMigrations, contract.StreamAudit,
		"KV_" + contract.BucketManifests, "KV_" + contract.BucketState, "OBJ_" + contract.ObjectSnapshots}
	leaders := waitReplicated(t, js, streams, 3)

	// Kill the audit stream's leader: it is elected elsewhere and a
	// published event is stored with the two nodes left.
	down := -1
	for i := range testenv.ClusterSize {
		if c.Server(i).Name() == leaders[contract.StreamAudit] {
			down = i
		}
	}
	if down < 0 {
		t.Fatalf("no node is named %q, the audit stream's leader", leaders[contract.StreamAudit])
	}
	c.Kill(down)
	after := waitReplicated(t, js, []string{contract.StreamAudit}, 2)
	if after[contract.StreamAudit] == leaders[contract.StreamAudit] {
		t.Errorf("the audit stream's leader is still the killed node %s", after[contract.StreamAudit])
	}
	if _, err := js.Publish(ctx, subj.Audit("snapshotter", "snapshot.create"), []byte(`{}`)); err != nil {
		t.Errorf("publish with a node down: %v", err)
	}
	c.Restart(t, down)
	waitReplicated(t, js, streams, 3)
}

// waitReplicated waits until each stream has a leader and current peers
// among want nodes, and returns the leaders by stream.
func waitReplicated(t *testing.T, js jetstream.JetStream, streams []string, want int) map[string]string {
	t.Helper()
	leaders := map[string]string{}
	deadline := time.Now().Add(20 * time.Second)
	for _, name := range streams {
		for {
			ok, why := replicated(t, js, name, want)
			if ok != "" {
				leaders[name] = ok
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("stream %s: %s", name, why)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return leaders
}

// replicated returns the stream's leader when it and want-1 current peers
// serve it, else "" and why not.
func replicated(t *testing.T, js jetstream.JetStream, name string, want int) (string, string) {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, name)
	if err != nil {
		return "", err.Error()
	}
	info := s.CachedInfo()
	if info.Config.Replicas != 3 {
		t.Fatalf("stream %s has %d replicas, want 3", name, info.Config.Replicas)
	}
	ci := info.Cluster
	if ci == nil || ci.Leader == "" {
		return "", "no leader"
	}
	current := 1
	for _, p := range ci.Replicas {
		if p.Current && !p.Offline {
			current++
		}
	}
	if current < want {
		return "", "too few current replicas"
	}
	return ci.Leader, ""
}
