package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/bus"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/services/restorer"
	"github.com/chromadb-rollback/chromadb-rollback/services/snapshotter"
	"github.com/chromadb-rollback/chromadb-rollback/services/watchdog"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

// chromaInstancesWait bounds the wait for every instance's Chroma check:
// each instance bounds its own at bus.ChromaHealthTimeout.
const chromaInstancesWait = bus.ChromaHealthTimeout + time.Second

// chromaInstancesCheck is the chroma_instances check: every instance of the
// services that talk to Chroma, as discovered, answers
// chroma.api.health.chroma saying it reaches its Chroma. The chroma check
// is one snapshotter's view (a queue group picks it): a restorer whose
// token was revoked or mistyped fails only the rollbacks it happens to
// take. Instances that do not serve the endpoint (an older version) are
// left out, named. ok is false when no instance serves it.
func (a *app) chromaInstancesCheck(ctx context.Context, nc *nats.Conn, mine map[string][]micro.Info) (contract.HealthCheck, bool) {
	c := contract.HealthCheck{Name: "chroma_instances"}
	type key struct{ service, instance string }
	subject := bus.ChromaHealthSubject(a.subj)
	expect := map[key]bool{}
	var older []string
	for _, s := range []struct{ name, role string }{
		{snapshotter.ServiceName, "snapshotter"}, {restorer.ServiceName, "restorer"}, {watchdog.ServiceName, "watchdog"},
	} {
		for _, info := range mine[s.name] {
			if slices.ContainsFunc(info.Endpoints, func(e micro.EndpointInfo) bool { return e.Subject == subject }) {
				expect[key{s.role, bus.InstanceName(info)}] = true
			} else {
				older = append(older, s.role+" "+bus.InstanceName(info))
			}
		}
	}
	if len(expect) == 0 {
		return c, false
	}
	inbox := nc.NewInbox()
	replies := make(chan *nats.Msg, 64)
	sub, err := nc.ChanSubscribe(inbox, replies)
	if err != nil {
		c.Detail = "subscribe: " + err.Error()
		return c, true
	}
	defer func() { _ = sub.Unsubscribe() }()
	req, _ := json.Marshal(contract.NewEnvelope(contract.TypeHealthRequest))
	if err := nc.PublishRequest(subject, inbox, req); err != nil {
		c.Detail = "ask " + subject + ": " + err.Error()
		return c, true
	}
	wait := time.NewTimer(chromaInstancesWait)
	defer wait.Stop()
	answered := map[key]contract.Health{}
collect:
	for len(answered) < len(expect) {
		select {
		case m := <-replies:
			var h contract.Health
			if json.Unmarshal(m.Data, &h) != nil || h.Instance == "" {
				continue
			}
			answered[key{h.Service, h.Instance}] = h
		case <-wait.C:
			break collect
		case <-ctx.Done():
			break collect
		}
	}
	var ok, bad []string
	for k := range expect {
		h, found := answered[k]
		switch {
		case !found:
			bad = append(bad, fmt.Sprintf("%s %s did not answer %s within %s", k.service, k.instance, subject, chromaInstancesWait))
		case !h.OK:
			detail := "not healthy"
			if len(h.Checks) > 0 {
				detail = h.Checks[0].Detail
			}
			bad = append(bad, fmt.Sprintf("%s %s: %s", k.service, k.instance, detail))
		default:
			ok = append(ok, k.service+" "+k.instance)
		}
	}
	slices.Sort(ok)
	slices.Sort(bad)
	slices.Sort(older)
	if len(bad) == 0 {
		c.OK = true
		c.Detail = fmt.Sprintf("%s reach Chroma (%s)", counted(len(ok), "instance"), strings.Join(ok, ", "))
	} else {
		c.Detail = fmt.Sprintf("%d of %s cannot reach Chroma: %s", len(bad), counted(len(expect), "instance"), strings.Join(bad, "; "))
	}
	if len(older) > 0 {
		c.Detail += fmt.Sprintf("; not asked (no %s endpoint, an older version): %s", bus.ChromaHealthEndpoint, strings.Join(older, ", "))
	}
	return c, true
}
