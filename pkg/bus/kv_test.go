package bus_test

import (
	"errors"
	"maps"
	"slices"
	"testing"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/bus"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
)

// TestEachValue: every matching key once, with its current value; deleted
// keys and keys outside the filter are not read; fn's error stops it.
func TestEachValue(t *testing.T) {
	n := testenv.StartNATS(t)
	ctx := t.Context()
	kv := n.Assets.State
	read := func(filter string) map[string]string {
		t.Helper()
		got := map[string]string{}
		err := bus.EachValue(ctx, kv, filter, func(key string, data []byte) error {
			if _, twice := got[key]; twice {
				t.Errorf("key %s read twice", key)
			}
			got[key] = string(data)
			return nil
		})
		if err != nil {
			t.Fatalf("EachValue(%s): %v", filter, err)
		}
		return got
	}
	if got := read("each.>"); len(got) != 0 {
		t.Errorf("empty bucket: %v", got)
	}
	for _, kvs := range [][2]string{{"each.a", "1"}, {"each.b", "1"}, {"each.c", "1"}, {"other.a", "x"}, {"each.a", "2"}} {
		if _, err := kv.Put(ctx, kvs[0], []byte(kvs[1])); err != nil {
			t.Fatal(err)
		}
	}
	if err := kv.Delete(ctx, "each.b"); err != nil {
		t.Fatal(err)
	}
	if got, want := read("each.>"), map[string]string{"each.a": "2", "each.c": "1"}; !maps.Equal(got, want) {
		t.Errorf("each.>: got %v, want %v", got, want)
	}
	if got := read(">"); !slices.Equal(slices.Sorted(maps.Keys(got)), []string{"each.a", "each.c", "other.a"}) {
		t.Errorf(">: got %v", got)
	}

	stop := errors.New("stop")
	calls := 0
	err := bus.EachValue(ctx, kv, ">", func(string, []byte) error { calls++; return stop })
	if !errors.Is(err, stop) || calls != 1 {
		t.Errorf("fn failing: %d calls, error %v; want 1 call and fn's error", calls, err)
	}
}
