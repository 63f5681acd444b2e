package testenv

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/record"
)

// LateWriter is a reverse proxy in front of a Chroma server that plays a
// writer active during an export: just before it forwards the first
// record read (a POST to a collection's /get), it adds records to that
// collection through its own client, straight to Chroma.
type LateWriter struct {
	// URL is the proxy's base URL, to give the exporting client.
	URL string
	// IDs are the ids of the records it adds: late-0, late-1, ...
	IDs []string

	mu    sync.Mutex
	added string // the collection's id, once added
}

// StartLateWriter starts a proxy to upstream (a Chroma base URL) that adds
// n records of dim dimensions with cc (a client of upstream) in tenant/db,
// closed at cleanup. A failed add fails the test.
func StartLateWriter(tb testing.TB, upstream string, cc *chroma.Client, tenant, db string, n, dim int) *LateWriter {
	tb.Helper()
	u, err := url.Parse(upstream)
	if err != nil {
		tb.Fatalf("late writer upstream: %v", err)
	}
	lw := &LateWriter{}
	b := &record.Batch{}
	for i := range n {
		lw.IDs = append(lw.IDs, fmt.Sprintf("late-%d", i))
		e := make([]float32, dim)
		e[0], e[dim-1] = 1, float32(i)
		b.IDs, b.Embeddings = append(b.IDs, lw.IDs[i]), append(b.Embeddings, e)
	}
	var once sync.Once
	rp := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if parts := strings.Split(r.URL.Path, "/"); r.Method == http.MethodPost && len(parts) > 1 && parts[len(parts)-1] == "get" {
			once.Do(func() {
				id := parts[len(parts)-2]
				if err := cc.Add(context.Background(), tenant, db, id, b); err != nil {
					tb.Errorf("late writer: add %d records to %s: %v", n, id, err)
					return
				}
				lw.mu.Lock()
				lw.added = id
				lw.mu.Unlock()
			})
		}
		rp.ServeHTTP(w, r)
	}))
	tb.Cleanup(srv.Close)
	lw.URL = srv.URL
	return lw
}

// Added is the id of the collection the records were added to, "" before.
func (lw *LateWriter) Added() string {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	return lw.added
}
