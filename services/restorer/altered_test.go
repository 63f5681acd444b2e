package restorer_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/metrics"
	"github.com/chromadb-rollback/chromadb-rollback/services/restorer"
	"github.com/nats-io/nats.go"
)

// alterer is a reverse proxy in front of a real Chroma that changes one
// write on its way, as a Chroma that does not keep what it is given would:
// the first request alter accepts (by returning true) goes on changed.
// While down is set it answers 503 to everything, as a Chroma that went
// away does to its clients once their retries run out.
type alterer struct {
	url   string
	down  atomic.Bool
	mu    sync.Mutex
	alter func(method, path string, body map[string]json.RawMessage) bool
	done  bool
}

func startAlterer(t *testing.T, upstream string) *alterer {
	t.Helper()
	u, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	a := &alterer{}
	rp := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a.down.Load() {
			http.Error(w, "chroma is down (test outage)", http.StatusServiceUnavailable)
			return
		}
		a.mu.Lock()
		alter := a.alter
		a.mu.Unlock()
		if alter != nil && r.Body != nil && (r.Method == http.MethodPost || r.Method == http.MethodPut) {
			data, err := io.ReadAll(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadGateway)
				return
			}
			var body map[string]json.RawMessage
			if json.Unmarshal(data, &body) == nil {
				a.mu.Lock()
				if a.alter != nil && a.alter(r.Method, r.URL.Path, body) {
					a.alter, a.done = nil, true
					if data, err = json.Marshal(body); err != nil {
						t.Errorf("alterer: %v", err)
					}
				}
				a.mu.Unlock()
			}
			r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(data)), int64(len(data))
			r.Header.Del("Content-Length")
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	a.url = srv.URL
	return a
}

// set arms the alterer with f.
func (a *alterer) set(f func(method, path string, body map[string]json.RawMessage) bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.alter, a.done = f, false
}

// altered says whether the armed change was made.
func (a *alterer) altered() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.done
}

// TestRestoreThatChromaAlters: a restore whose records or collection
// Chroma does not keep as they were sent is reported as failed, naming the
// collection, the record and what differs; the live collection is left as
// it was and the staging collection goes. Each kind of difference the
// check after a restore looks for is made once, on the way to a real
// Chroma.
func TestRestoreThatChromaAlters(t *testing.T) {
	e := seeded(t)
	alt := startAlterer(t, e.chroma.URL)
	target, err := chroma.New(alt.url, chroma.WithRetryMaxElapsed(3*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	e.run(t, "restorer", func(nc *nats.Conn) (interface{ Run(context.Context) error }, error) {
		return restorer.New(restorer.Config{ChromaURL: e.chroma.URL, AckWait: 2 * time.Second, LeaseTTL: 5 * time.Second, Instance: "restorer"}, nc, e.subj, target, testLogger(t))
	})
	waitForService(t, e.nats.Conn, e.subj.API("rollback", "status"))

	pre, snap, damaged := e.snapshotThenDamage(t)

	// onFirstAdd changes the first add's body; the id of the record it
	// changed is sent on the channel.
	onFirstAdd := func(change func(body map[string]json.RawMessage)) (func(string, string, map[string]json.RawMessage) bool, <-chan string) {
		ids := make(chan string, 1)
		return func(method, path string, body map[string]json.RawMessage) bool {
			if method != http.MethodPost || !strings.HasSuffix(path, "/add") {
				return false
			}
			var got []string
			if err := json.Unmarshal(body["ids"], &got); err != nil || len(got) == 0 {
				return false
			}
			change(body)
			ids <- got[0]
			return true
		}, ids
	}
	// first replaces the first element of body's array column col.
	first := func(body map[string]json.RawMessage, col string, f func(json.RawMessage) json.RawMessage) {
		var arr []json.RawMessage
		if err := json.Unmarshal(body[col], &arr); err != nil || len(arr) == 0 {
			t.Errorf("add body has no %s: %v", col, err)
			return
		}
		arr[0] = f(arr[0])
		body[col], _ = json.Marshal(arr)
	}
	raw := func(v any) json.RawMessage { b, _ := json.Marshal(v); return b }
	// firstFloat changes the first value of a base64 (little-endian
	// float32) or array embedding.
	firstFloat := func(f func(float32) float32) func(json.RawMessage) json.RawMessage {
		return func(m json.RawMessage) json.RawMessage {
			var s string
			if json.Unmarshal(m, &s) == nil {
				b, err := base64.StdEncoding.DecodeString(s)
				if err != nil || len(b) < 4 {
					t.Errorf("embedding %.40s: %v", s, err)
					return m
				}
				binary.LittleEndian.PutUint32(b, math.Float32bits(f(math.Float32frombits(binary.LittleEndian.Uint32(b)))))
				return raw(base64.StdEncoding.EncodeToString(b))
			}
			var v []float32
			if err := json.Unmarshal(m, &v); err != nil || len(v) == 0 {
				t.Errorf("embedding %.40s: %v", m, err)
				return m
			}
			v[0] = f(v[0])
			return raw(v)
		}
	}

	for _, tc := range []struct {
		name, collection string
		alter            func(method, path string, body map[string]json.RawMessage) bool
		ids              <-chan string // the id of the record changed
		want             string        // the difference; %s is the record id
	}{
		{name: "document", collection: "corpus.v1", want: `record %q: document is "changed by Chroma", want `},
		{name: "record metadata", collection: "corpus.v1", want: `record %q: metadata {"changed":true}, want {`},
		{name: "embedding bit", collection: "personality", want: `record %q: embedding value 0 is `},
		{name: "cosine vector", collection: "cosine_768", want: `record %q: embedding value 0 is `},
		{name: "record dropped", collection: "corpus.v1", want: `record %q is missing`},
		{name: "collection metadata", collection: "corpus.v1", want: `collection metadata {"changed":true}, the snapshot has {`},
		{name: "configuration", collection: "corpus.v1", want: `configuration {`},
	} {
		switch tc.name {
		case "document":
			tc.alter, tc.ids = onFirstAdd(func(body map[string]json.RawMessage) {
				first(body, "documents", func(json.RawMessage) json.RawMessage { return raw("changed by Chroma") })
			})
		case "record metadata":
			tc.alter, tc.ids = onFirstAdd(func(body map[string]json.RawMessage) {
				first(body, "metadatas", func(json.RawMessage) json.RawMessage { return raw(map[string]bool{"changed": true}) })
			})
		case "embedding bit":
			tc.alter, tc.ids = onFirstAdd(func(body map[string]json.RawMessage) {
				first(body, "embeddings", firstFloat(func(f float32) float32 { return math.Float32frombits(math.Float32bits(f) ^ 1) }))
			})
		case "cosine vector":
			tc.alter, tc.ids = onFirstAdd(func(body map[string]json.RawMessage) {
				first(body, "embeddings", firstFloat(func(f float32) float32 { return f + 0.5 }))
			})
		case "record dropped":
			tc.alter, tc.ids = onFirstAdd(func(body map[string]json.RawMessage) {
				for _, col := range []string{"ids", "embeddings", "documents", "metadatas", "uris"} {
					var arr []json.RawMessage
					if json.Unmarshal(body[col], &arr) == nil && len(arr) > 0 {
						body[col] = raw(arr[1:])
					}
				}
			})
		case "collection metadata":
			// The staging collection is made with its configuration, then
			// given its metadata.
			tc.alter = func(method, path string, body map[string]json.RawMessage) bool {
				if _, ok := body["new_metadata"]; method != http.MethodPut || !ok {
					return false
				}
				body["new_metadata"] = raw(map[string]bool{"changed": true})
				return true
			}
		case "configuration":
			// corpus.v1 has ef_search 80.
			tc.alter = func(method, path string, body map[string]json.RawMessage) bool {
				if method != http.MethodPost || !strings.HasSuffix(path, "/collections") || !bytes.Contains(body["configuration"], []byte(`"ef_search":80`)) {
					return false
				}
				body["configuration"] = bytes.Replace(body["configuration"], []byte(`"ef_search":80`), []byte(`"ef_search":81`), 1)
				return true
			}
		}
		t.Run(tc.name, func(t *testing.T) {
			alt.set(tc.alter)
			defer alt.set(nil)
			r := e.start(t, contract.RollbackRequest{SnapshotID: snap, Confirm: true, NoSafetySnapshot: true, Collections: []string{tc.collection}})
			op := e.waitOp(t, r.OpID, time.Minute)
			if !alt.altered() {
				t.Fatalf("nothing was changed on the way to Chroma; op %s %q", op.Status, op.Error)
			}
			want := tc.want
			if tc.ids != nil {
				want = fmt.Sprintf(want, <-tc.ids)
			}
			if op.Status != contract.StatusFailed || !strings.Contains(op.Error, "restored data does not match the snapshot") ||
				!strings.Contains(op.Error, `"`+tc.collection+`"`) || !strings.Contains(op.Error, want) {
				t.Fatalf("op %s %q; want failed, naming %q and %s", op.Status, op.Error, tc.collection, want)
			}
			if op.FailureReason != metrics.ReasonVerification {
				t.Errorf("failure reason %q, want %q", op.FailureReason, metrics.ReasonVerification)
			}
			if strings.Contains(op.Error, "differences") {
				t.Errorf("one difference told as several: %q", op.Error)
			}
			var listed bool
			for _, c := range op.Restore.Collections {
				if c.Collection == tc.collection {
					listed = !c.Verified && len(c.Differences) > 0 && strings.HasPrefix(c.Differences[0], want)
				}
			}
			if !listed || op.Restore.Verified {
				t.Errorf("the report does not list %s: %s", want, mustJSON(t, op.Restore))
			}
			if evs := findAudit(e.auditEvents(t), "rollback", contract.OutcomeFailed); len(evs) == 0 ||
				evs[len(evs)-1].OpID != r.OpID || !strings.Contains(evs[len(evs)-1].Error, want) {
				t.Errorf("no failed audit event for %s saying %s: %+v", r.OpID, want, evs)
			}
			// Nothing was swapped in and no staging collection is left:
			// the database is as the migration left it.
			compareDB(t, "after a restore Chroma altered", e.dump(t, "acme", "prod"), damaged, nil)
			e.assertReleased(t)
		})
	}

	t.Run("nothing altered", func(t *testing.T) {
		// The proxy itself changes nothing: through it, the same rollback
		// restores the collection as it was.
		op := e.rollback(t, contract.RollbackRequest{SnapshotID: snap, NoSafetySnapshot: true, Collections: []string{"corpus.v1"}})
		if !op.Restore.Verified {
			t.Errorf("report %s", mustJSON(t, op.Restore))
		}
		after := e.dump(t, "acme", "prod")
		compareCollection(t, "corpus.v1 restored through the proxy", after["corpus.v1"], pre["corpus.v1"])
		want := damaged.clone()
		want["corpus.v1"] = after["corpus.v1"]
		compareDB(t, "after restoring corpus.v1 through the proxy", after, want, nil)
	})
}
