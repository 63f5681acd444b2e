package watchdog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/bus"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
)

// restorerService is the restorer's micro service name (restorer.ServiceName).
const restorerService = "chromadb-restorer"

// restorerWait bounds how long the watchdog waits for restorers to
// answer the micro discovery when none that answered so far can decrypt.
const restorerWait = time.Second

// decryptProblem says why no rollback to m can run when m is encrypted
// with age and none of the restorers that answer the micro discovery
// ($SRV.INFO.chromadb-restorer, of this prefix) holds an identity for one
// of its recipients (each advertises its identities' public keys,
// contract.MetaAgeIdentities): the rollback would be refused. "" when m is
// plain, a restorer can decrypt it, or no restorer answered (not running
// yet, or a watchdog user without the permission to ask): the rollback
// tells then, as it did before this check.
func (s *Service) decryptProblem(ctx context.Context, m *contract.SnapshotManifest) string {
	if m.Encryption != contract.EncryptionAge {
		return ""
	}
	canDecrypt := func(i micro.Info) bool {
		ids := strings.Split(i.Metadata[contract.MetaAgeIdentities], ",")
		return slices.ContainsFunc(m.Recipients, func(k string) bool { return slices.Contains(ids, k) })
	}
	answered, ok, err := s.askRestorers(ctx, canDecrypt)
	switch {
	case ok:
		return ""
	case err != nil || len(answered) == 0:
		s.log.Warn("no restorer answered; the encrypted pre-migration snapshot is pinned without knowing whether it can be decrypted",
			"snapshot", m.SnapshotID, "err", err)
		return ""
	}
	slices.Sort(answered)
	return fmt.Sprintf("snapshot %s is encrypted with age to %s and no restorer holds an identity for it (%s): a rollback to it would be refused; give the restorer the identity (--age-identity-file), then start the migration again",
		m.SnapshotID, strings.Join(m.Recipients, ", "), strings.Join(answered, ", "))
}

// askRestorers asks the restorers of this prefix for their micro info
// until one satisfies ok, or restorerWait has passed; it returns the
// instances that answered.
func (s *Service) askRestorers(ctx context.Context, ok func(micro.Info) bool) ([]string, bool, error) {
	subject, err := micro.ControlSubject(micro.InfoVerb, restorerService, "")
	if err != nil {
		return nil, false, err
	}
	inbox := s.nc.NewInbox()
	ch := make(chan *nats.Msg, 16)
	sub, err := s.nc.ChanSubscribe(inbox, ch)
	if err != nil {
		return nil, false, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := s.nc.PublishRequest(subject, inbox, nil); err != nil {
		return nil, false, err
	}
	api := s.subj.API("")
	ctx, cancel := context.WithTimeout(ctx, restorerWait)
	defer cancel()
	var answered []string
	for {
		select {
		case msg := <-ch:
			var info micro.Info
			if json.Unmarshal(msg.Data, &info) != nil ||
				!slices.ContainsFunc(info.Endpoints, func(e micro.EndpointInfo) bool { return strings.HasPrefix(e.Subject, api) }) {
				continue // another deployment's, on the same account
			}
			name := info.Metadata["instance"]
			if name == "" {
				name = info.ID
			}
			answered = append(answered, name)
			if ok(info) {
				return answered, true, nil
			}
		case <-ctx.Done():
			return answered, false, nil
		}
	}
}

// manifestOf reads the manifest of snapshot id; nil when there is none.
func (s *Service) manifestOf(ctx context.Context, id string) (*contract.SnapshotManifest, error) {
	e, err := s.assets.Manifests.Get(ctx, id)
	if err != nil {
		if bus.IsNotFound(err) || errors.Is(err, jetstream.ErrKeyDeleted) {
			return nil, nil
		}
		return nil, err
	}
	var m contract.SnapshotManifest
	if err := json.Unmarshal(e.Value(), &m); err != nil {
		return nil, err
	}
	return &m, nil
}
