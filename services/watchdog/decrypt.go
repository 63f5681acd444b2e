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
	"github.com/chromadb-rollback/chromadb-rollback/pkg/crypt"
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
		return crypt.CanDecrypt(m.Recipients, strings.Split(i.Metadata[contract.MetaAgeIdentities], ","))
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
	infos, stop, err := bus.AskServiceInfo(ctx, s.nc, restorerService)
	if err != nil {
		return nil, false, err
	}
	defer stop()
	api := s.subj.API("")
	ctx, cancel := context.WithTimeout(ctx, restorerWait)
	defer cancel()
	var answered []string
	for {
		select {
		case info := <-infos:
			if !bus.ServesUnder(info, api) {
				continue // another deployment's, on the same account
			}
			answered = append(answered, bus.InstanceName(info))
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
