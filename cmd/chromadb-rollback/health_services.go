package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/bus"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/crypt"
	"github.com/chromadb-rollback/chromadb-rollback/services/auditor"
	"github.com/chromadb-rollback/chromadb-rollback/services/restorer"
	"github.com/chromadb-rollback/chromadb-rollback/services/snapshotter"
	"github.com/chromadb-rollback/chromadb-rollback/services/watchdog"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

// healthServices are the micro services a deployment runs: health-check
// fails naming any of them that no instance answers for.
var healthServices = []struct {
	name, role, without string
}{
	{snapshotter.ServiceName, "snapshotter", "no snapshots, verify, import or retention"},
	{restorer.ServiceName, "restorer", "no rollback can run, automatic ones included"},
	{watchdog.ServiceName, "watchdog", "migrations are not watched and nothing rolls back by itself"},
	{auditor.ServiceName, "auditor", "the audit trail is not written"},
}

// discoveryWait bounds how long health-check waits for the services'
// discovery answers; discoverySettle is how long it goes on listening,
// once every service answered, for more instances of them.
const (
	discoveryWait   = 3 * time.Second
	discoverySettle = 300 * time.Millisecond
)

// discover asks every service in healthServices for its micro info
// ($SRV.INFO.<name>, as `nats micro info` does) and returns the
// instances that answered, by service name, and apart those that serve
// another subject prefix (another deployment on the same account).
func (a *app) discover(ctx context.Context, nc *nats.Conn) (mine, other map[string][]micro.Info, err error) {
	names := make([]string, len(healthServices))
	for i, s := range healthServices {
		names[i] = s.name
	}
	infos, stop, err := bus.AskServiceInfo(ctx, nc, names...)
	if err != nil {
		return nil, nil, err
	}
	defer stop()
	mine, other = map[string][]micro.Info{}, map[string][]micro.Info{}
	api := a.subj.API("") // "chroma.api."
	deadline := time.NewTimer(discoveryWait)
	defer deadline.Stop()
	var settle <-chan time.Time
	for {
		select {
		case info := <-infos:
			if bus.ServesUnder(info, api) {
				mine[info.Name] = append(mine[info.Name], info)
			} else {
				other[info.Name] = append(other[info.Name], info)
			}
			if settle == nil && len(mine) == len(healthServices) {
				settle = time.After(discoverySettle)
			}
		case <-settle:
			return mine, other, nil
		case <-deadline.C:
			return mine, other, nil
		case <-ctx.Done():
			return mine, other, ctx.Err()
		}
	}
}

// serviceChecks are the service_<role> checks: each of the four services
// has an instance serving this prefix's subjects.
func (a *app) serviceChecks(mine, other map[string][]micro.Info) []contract.HealthCheck {
	var checks []contract.HealthCheck
	for _, s := range healthServices {
		c := contract.HealthCheck{Name: "service_" + s.role}
		if is := mine[s.name]; len(is) > 0 {
			names := make([]string, len(is))
			for i, in := range is {
				names[i] = bus.InstanceName(in)
			}
			slices.Sort(names)
			c.OK = true
			c.Detail = fmt.Sprintf("%s %s: %s (%s)", s.name, is[0].Version, counted(len(is), "instance"), strings.Join(names, ", "))
		} else {
			c.Detail = fmt.Sprintf("no %s answered $SRV.INFO.%s within %s: the %s is not running (serve, or bin/%s) or not on this NATS account; without it %s",
				s.name, s.name, discoveryWait, s.role, s.role, s.without)
			if others := other[s.name]; len(others) > 0 {
				var subjects []string
				for _, in := range others {
					for _, e := range in.Endpoints {
						subjects = append(subjects, e.Subject)
					}
				}
				c.Detail += fmt.Sprintf(" (%s of it answered for another --prefix than %q, serving %s)", counted(len(others), "instance"), a.subj.Prefix, strings.Join(subjects, ", "))
			}
		}
		checks = append(checks, c)
	}
	return checks
}

// encryptionCheck says whether every restorer can decrypt the archives
// every snapshotter writes: with --age-recipients and no restorer identity
// for one of them, snapshots are taken and pinned for migrations as usual,
// and only the rollback to one is refused. The same goes for the archives
// already stored (stored, the snapshots listed; nil when they could not be
// listed): after the keys were changed (--age-recipients, and an identity
// file without the old key), or encryption turned off, the snapshots
// encrypted to the old keys still list, verify (ciphertext only) and stand
// as restore points, and only their rollback is refused. ok is false when
// nothing can be said (no snapshotter, or no restorer, answered: their own
// checks failed).
func encryptionCheck(snapshotters, restorers []micro.Info, stored []contract.SnapshotManifest) (contract.HealthCheck, bool) {
	c := contract.HealthCheck{Name: "archive_encryption", OK: true}
	if len(snapshotters) == 0 || len(restorers) == 0 {
		return c, false
	}
	// The distinct recipient sets new archives are encrypted to.
	var sets []string
	for _, s := range snapshotters {
		if keys := s.Metadata[contract.MetaAgeRecipients]; keys != "" && !slices.Contains(sets, keys) {
			sets = append(sets, keys)
		}
	}
	// The stored archives by the recipients they are encrypted to.
	var storedSets []string
	storedIDs := map[string][]string{}
	encrypted := 0
	for _, m := range stored {
		if m.Encryption == "" {
			continue
		}
		encrypted++
		keys := slices.Clone(m.Recipients)
		slices.Sort(keys)
		set := strings.Join(keys, ",")
		if _, ok := storedIDs[set]; !ok {
			storedSets = append(storedSets, set)
		}
		storedIDs[set] = append(storedIDs[set], m.SnapshotID)
	}
	slices.Sort(storedSets)
	storedProblems := cannotDecrypt(restorers, storedSets, func(r micro.Info, _ []string, set string) string {
		snaps := storedIDs[set]
		named := strings.Join(snaps[:min(len(snaps), 3)], ", ")
		if len(snaps) > 3 {
			named += fmt.Sprintf(" and %d more", len(snaps)-3)
		}
		return fmt.Sprintf("restorer %s cannot decrypt %s encrypted to %s (%s)",
			bus.InstanceName(r), counted(len(snaps), "stored snapshot"), set, named)
	})
	storedText := ""
	if encrypted > 0 && len(storedProblems) == 0 {
		storedText = fmt.Sprintf("; every restorer holds an identity for the %s stored", counted(encrypted, "encrypted snapshot"))
	}
	storedFail := func(what string) (contract.HealthCheck, bool) {
		c.OK = false
		c.Detail = fmt.Sprintf("%s, but %s: a rollback to such a snapshot, automatic ones included, will be refused. Give the restorer their identity (keep the old key in --age-identity-file, env AGE_IDENTITY_FILE, after changing --age-recipients, until the snapshots encrypted to it are gone), or delete them",
			what, strings.Join(storedProblems, "; "))
		return c, true
	}
	if len(sets) == 0 {
		what := "new archives are stored unencrypted (no --age-recipients)"
		if len(storedProblems) > 0 {
			return storedFail(what)
		}
		c.Detail = what + storedText
		return c, true
	}
	slices.Sort(sets)
	problems := cannotDecrypt(restorers, sets, func(r micro.Info, ids []string, set string) string {
		if len(ids) == 0 {
			return fmt.Sprintf("restorer %s has no identity to decrypt those encrypted to %s", bus.InstanceName(r), set)
		}
		return fmt.Sprintf("the identities of restorer %s (%s) are not among the recipients %s", bus.InstanceName(r), strings.Join(ids, ","), set)
	})
	what := "new archives are encrypted with age to " + strings.Join(sets, " or ")
	if len(problems) == 0 {
		if len(storedProblems) > 0 {
			return storedFail(what + "; every restorer holds an identity for them")
		}
		c.Detail = what + "; every restorer holds an identity for them" + storedText
		return c, true
	}
	c.OK = false
	c.Detail = fmt.Sprintf("%s, but %s: a rollback to such a snapshot, automatic ones included, will be refused until the restorer is given the identity (--age-identity-file, env AGE_IDENTITY_FILE)",
		what, strings.Join(problems, "; "))
	if len(storedProblems) > 0 {
		c.Detail += "; and " + strings.Join(storedProblems, "; ")
	}
	return c, true
}

// cannotDecrypt says, with say, of each restorer and each recipient set
// (comma-separated age public keys) that none of its identities decrypts.
func cannotDecrypt(restorers []micro.Info, sets []string, say func(r micro.Info, ids []string, set string) string) []string {
	var out []string
	for _, r := range restorers {
		ids := splitList(r.Metadata[contract.MetaAgeIdentities])
		for _, set := range sets {
			if !crypt.CanDecrypt(splitList(set), ids) {
				out = append(out, say(r, ids, set))
			}
		}
	}
	return out
}
