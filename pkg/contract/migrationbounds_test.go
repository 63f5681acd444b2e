package contract

import (
	"strings"
	"testing"
)

// TestValidateMigrationEventBounds: a time limit under a second (1e-9,
// seconds mistaken for another unit) aborted the job and rolled the
// database back at once; a negative done_records was taken as said.
func TestValidateMigrationEventBounds(t *testing.T) {
	start := func(limit float64) *MigrationEvent {
		return &MigrationEvent{Envelope: Envelope{Type: MigrationEventTypes[EventStarted]}, Job: "j1",
			Tenant: "t", Database: "d", SnapshotID: "s", TimeLimitSeconds: limit}
	}
	beat := func(done int64) *MigrationEvent {
		return &MigrationEvent{Envelope: Envelope{Type: MigrationEventTypes[EventHeartbeat]}, Job: "j1", DoneRecords: done}
	}
	for _, c := range []struct {
		event string
		m     *MigrationEvent
		want  string // "" when valid
	}{
		{EventStarted, start(0), ""},
		{EventStarted, start(1), ""},
		{EventStarted, start(3600), ""},
		{EventStarted, start(1e-9), "time_limit_seconds 1e-09 is under 1"},
		{EventStarted, start(0.5), "time_limit_seconds 0.5 is under 1"},
		{EventStarted, start(-1), "is negative"},
		{EventHeartbeat, beat(0), ""},
		{EventHeartbeat, beat(42), ""},
		{EventHeartbeat, beat(-5), "done_records -5 is negative"},
	} {
		err := ValidateMigrationEvent(c.event, "j1", c.m)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s %+v: %v, want valid", c.event, c.m, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s %+v: %v, want an error with %q", c.event, c.m, err, c.want)
		}
	}
}
