package testenv_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/record"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
)

func TestToolsDirOverride(t *testing.T) {
	t.Setenv("CHROMADB_ROLLBACK_TOOLS", "/nowhere/.tools")
	if d, err := testenv.ToolsDir(); err != nil || d != "/nowhere/.tools" {
		t.Errorf("ToolsDir() = %q, %v; want the override", d, err)
	}
	if _, err := testenv.ChromaPackageDir(); err == nil || !strings.Contains(err.Error(), "make tools") {
		t.Errorf("ChromaPackageDir() err = %v, want a hint to run make tools", err)
	}
}

// TestStopRestartKeepsData kills the server as a crash would and starts it
// again on the same port and data.
func TestStopRestartKeepsData(t *testing.T) {
	srv := testenv.StartChroma(t)
	c := srv.Client(t, chroma.WithRetryMaxElapsed(200*time.Millisecond))
	ctx := t.Context()
	if err := c.CreateDatabase(ctx, "default_tenant", "keep"); err != nil {
		t.Fatal(err)
	}
	col, err := c.CreateCollection(ctx, "default_tenant", "keep", chroma.CreateCollection{Name: "kept"})
	if err != nil {
		t.Fatal(err)
	}
	b := &record.Batch{IDs: []string{"a", "b"}, Embeddings: [][]float32{{1, 2}, {3, 4}}}
	if err := c.Add(ctx, "default_tenant", "keep", col.ID, b); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	srv.Stop() // idempotent
	if srv.Running() {
		t.Fatal("server still running after Stop")
	}
	if err := c.Heartbeat(ctx); err == nil {
		t.Fatal("heartbeat answered by a stopped server")
	}
	srv.Restart(t)
	if n, err := c.Count(ctx, "default_tenant", "keep", col.ID); err != nil || n != 2 {
		t.Errorf("Count after restart = %d, %v; want 2", n, err)
	}
	if _, err := c.GetCollection(ctx, "default_tenant", "keep", "missing"); !errors.Is(err, chroma.ErrNotFound) {
		t.Errorf("err = %v, want ErrNotFound", err)
	}
}
