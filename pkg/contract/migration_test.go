package contract_test

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
)

// TestValidationWritesValidChunks: a validation event carries valid_chunks
// even when no record is valid, as the watchdog requires (it refuses one
// without, so that a misspelt field is not read as a total loss); other
// events leave the zero figures out, and every event reads back as written.
func TestValidationWritesValidChunks(t *testing.T) {
	val := contract.MigrationEvent{Envelope: contract.NewEnvelope(contract.TypeMigrationValidation), Job: "j", TotalChunks: 100,
		PerCollection: []contract.CollectionValidation{{Collection: "c", ValidChunks: 0, TotalChunks: 100}}}
	hb := contract.MigrationEvent{Envelope: contract.NewEnvelope(contract.TypeMigrationHeartbeat), Job: "j", Phase: "copy"}
	for _, c := range []struct {
		ev        contract.MigrationEvent
		validKeys int
	}{{val, 2}, {hb, 0}} {
		data, err := json.Marshal(c.ev)
		if err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(string(data), `"valid_chunks":0`); n != c.validKeys {
			t.Errorf("%s: valid_chunks written %d times, want %d: %s", c.ev.Type, n, c.validKeys, data)
		}
		var back contract.MigrationEvent
		if err := json.Unmarshal(data, &back); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(back, c.ev) {
			t.Errorf("%s read back as %+v, was %+v", c.ev.Type, back, c.ev)
		}
		if ptr, err := json.Marshal(&c.ev); err != nil || string(ptr) != string(data) {
			t.Errorf("%s through a pointer: %s (%v), by value: %s", c.ev.Type, ptr, err, data)
		}
	}
}
