package bus_test

import (
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/bus"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
	"github.com/nats-io/nats.go/micro"
)

// TestAskServiceInfo: every instance of the services asked answers, each
// told apart by its subjects (this deployment's prefix or another's) and
// named by its instance metadata; other services are not asked.
func TestAskServiceInfo(t *testing.T) {
	n := testenv.StartNATS(t)
	add := func(name, instance, subject string) {
		svc, err := micro.AddService(n.Conn, micro.Config{Name: name, Version: "1.0.0", Metadata: map[string]string{"instance": instance}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = svc.Stop() })
		if err := svc.AddEndpoint("e", micro.HandlerFunc(func(micro.Request) {}), micro.WithEndpointSubject(subject)); err != nil {
			t.Fatal(err)
		}
	}
	add("svc-a", "a-1", "chroma.api.a")
	add("svc-a", "a-2", "other.api.a")
	add("svc-b", "", "chroma.api.b")
	add("svc-c", "c-1", "chroma.api.c")

	infos, stop, err := bus.AskServiceInfo(t.Context(), n.Conn, "svc-a", "svc-b")
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	got := map[string]bool{} // instance name -> serves chroma.api.
	for len(got) < 3 {
		select {
		case info := <-infos:
			got[bus.InstanceName(info)] = bus.ServesUnder(info, "chroma.api.")
			if info.Name == "svc-b" && bus.InstanceName(info) != info.ID {
				t.Errorf("an instance without instance metadata is named %q, want its id %q", bus.InstanceName(info), info.ID)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("answers after 5s: %v", got)
		}
	}
	if !got["a-1"] || got["a-2"] || len(got) != 3 {
		t.Errorf("answers %v: want a-1 of this prefix, a-2 of another, svc-b's by id, and not svc-c", got)
	}
	select {
	case info := <-infos:
		t.Errorf("a fourth answer: %s %s", info.Name, bus.InstanceName(info))
	case <-time.After(200 * time.Millisecond):
	}
}
