package bus

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/nats-io/nats.go/micro"
)

// ChromaHealthEndpoint is the micro endpoint every instance of the
// services that talk to Chroma (snapshotter, restorer, watchdog) answers
// on ChromaHealthSubject.
const ChromaHealthEndpoint = "chroma_health"

// ChromaHealthTimeout bounds an instance's Chroma check.
const ChromaHealthTimeout = 5 * time.Second

// ChromaHealthSubject is chroma.api.health.chroma under subj's prefix.
func ChromaHealthSubject(subj contract.Subjects) string { return subj.API("health", "chroma") }

// AddChromaHealth adds ChromaHealthEndpoint to svc, without a queue group:
// every instance answers with whether it reaches its Chroma (its URL, its
// token), so health-check finds the one instance of several whose token
// was revoked or mistyped, which the queue-grouped chroma.api.health
// (answered by one snapshotter) only finds by chance. version is the
// instance's Chroma client's Version; chromaURL names the server.
func AddChromaHealth(ctx context.Context, svc micro.Service, subj contract.Subjects, service, instance, chromaURL string,
	version func(context.Context) (string, error), log *slog.Logger) error {
	h := func(ctx context.Context, r micro.Request) {
		cctx, cancel := context.WithTimeout(ctx, ChromaHealthTimeout)
		defer cancel()
		v, err := version(cctx)
		c := contract.HealthCheck{Name: "chroma", OK: err == nil,
			Detail: fmt.Sprintf("%s reachable, version %s", chroma.RedactURL(chromaURL), v)}
		if err != nil {
			c.Detail = fmt.Sprintf("%s: %v", chroma.RedactURL(chromaURL), err)
		}
		RespondJSON(r, contract.Health{Envelope: contract.NewEnvelope(contract.TypeHealth), OK: c.OK,
			Checks: []contract.HealthCheck{c}, Service: service, Instance: instance})
	}
	if err := svc.AddEndpoint(ChromaHealthEndpoint, Handler(ctx, log, h),
		micro.WithEndpointSubject(ChromaHealthSubject(subj)), micro.WithEndpointQueueGroupDisabled()); err != nil {
		return fmt.Errorf("add endpoint %s: %w", ChromaHealthEndpoint, err)
	}
	return nil
}
