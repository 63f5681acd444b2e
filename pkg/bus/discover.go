package bus

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

// discoveryFlush bounds how long AskServiceInfo waits for NATS to take its
// requests (a flush needs a deadline, and callers' contexts may have none).
const discoveryFlush = 2 * time.Second

// AskServiceInfo asks every instance of the micro services names for its
// info on one inbox ($SRV.INFO.<name>, as `nats micro info` does; the inbox
// honours the connection's inbox prefix) and returns the channel the
// answers come on, decoded, until stop is called. Callers decide how long
// to listen; ServesUnder tells this deployment's instances from another's
// on the same account.
func AskServiceInfo(ctx context.Context, nc *nats.Conn, names ...string) (infos <-chan micro.Info, stop func(), err error) {
	inbox := nc.NewInbox()
	raw := make(chan *nats.Msg, 64)
	sub, err := nc.ChanSubscribe(inbox, raw)
	if err != nil {
		return nil, nil, err
	}
	for _, name := range names {
		subject, err := micro.ControlSubject(micro.InfoVerb, name, "")
		if err == nil {
			err = nc.PublishRequest(subject, inbox, nil)
		}
		if err != nil {
			_ = sub.Unsubscribe()
			return nil, nil, fmt.Errorf("ask %s for its info: %w", name, err)
		}
	}
	fctx, cancel := context.WithTimeout(ctx, discoveryFlush)
	err = nc.FlushWithContext(fctx)
	cancel()
	if err != nil {
		_ = sub.Unsubscribe()
		return nil, nil, err
	}
	out, done := make(chan micro.Info, 64), make(chan struct{})
	go func() {
		for {
			select {
			case m := <-raw:
				var info micro.Info
				if json.Unmarshal(m.Data, &info) != nil || info.Name == "" {
					continue
				}
				select {
				case out <- info:
				case <-done:
					return
				}
			case <-done:
				return
			}
		}
	}()
	var once sync.Once
	return out, func() {
		once.Do(func() {
			_ = sub.Unsubscribe()
			close(done)
		})
	}, nil
}

// ServesUnder says whether a service instance serves an endpoint under
// prefix (a deployment's API subjects, "chroma.api."): instances of another
// deployment on the same account do not.
func ServesUnder(info micro.Info, prefix string) bool {
	return slices.ContainsFunc(info.Endpoints, func(e micro.EndpointInfo) bool { return strings.HasPrefix(e.Subject, prefix) })
}

// InstanceName is how messages name a service instance: its "instance"
// metadata, else its micro id.
func InstanceName(info micro.Info) string {
	if n := info.Metadata["instance"]; n != "" {
		return n
	}
	return info.ID
}
