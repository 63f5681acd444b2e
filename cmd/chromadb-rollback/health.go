package main

import (
	"context"
	"fmt"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/services/restorer"
	"github.com/chromadb-rollback/chromadb-rollback/services/snapshotter"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
)

func (a *app) healthCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "health-check",
		Short: "Check NATS, the four services, JetStream, Chroma, the store, the audit trail and free disk",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			h := contract.Health{Envelope: contract.NewEnvelope(contract.TypeHealth), OK: true}
			add := func(c contract.HealthCheck) {
				h.Checks = append(h.Checks, c)
				h.OK = h.OK && c.OK
			}
			nc, err := a.connect()
			if err != nil {
				add(contract.HealthCheck{Name: "nats", Detail: err.Error()})
			} else {
				defer nc.Close()
				add(contract.HealthCheck{Name: "nats", OK: true, Detail: "connected to " + nc.ConnectedUrlRedacted()})
				// Each of the four services runs: the health request
				// below is answered by the snapshotter alone.
				mine, other, err := a.discover(cmd.Context(), nc)
				// Every instance's Chroma check runs beside the health
				// request below: each waits for Chroma at most 5 s.
				type instancesResult struct {
					c  contract.HealthCheck
					ok bool
				}
				instances := make(chan instancesResult, 1)
				if err != nil {
					add(contract.HealthCheck{Name: "services", Detail: "micro discovery: " + err.Error()})
					instances <- instancesResult{}
				} else {
					for _, c := range a.serviceChecks(mine, other) {
						add(c)
					}
					// The snapshots stored, for the keys their archives
					// are encrypted to; when they cannot be listed, the
					// snapshotter's own checks say why.
					var stored []contract.SnapshotManifest
					if len(mine[snapshotter.ServiceName]) > 0 && len(mine[restorer.ServiceName]) > 0 {
						ctx, cancel := context.WithTimeout(cmd.Context(), 15*time.Second)
						if list, err := a.listSnapshots(ctx, nc); err == nil {
							stored = list.Snapshots
						}
						cancel()
					}
					if c, ok := encryptionCheck(mine[snapshotter.ServiceName], mine[restorer.ServiceName], stored); ok {
						add(c)
					}
					go func() {
						c, ok := a.chromaInstancesCheck(cmd.Context(), nc, mine)
						instances <- instancesResult{c, ok}
					}()
				}
				var remote contract.Health
				remoteErr := a.request(cmd.Context(), nc, a.subj.API("health"), contract.NewEnvelope(contract.TypeHealthRequest), &remote, 15*time.Second)
				if r := <-instances; r.ok {
					add(r.c)
				}
				if err := remoteErr; err != nil {
					add(contract.HealthCheck{Name: "services", Detail: err.Error()})
				} else {
					for _, c := range remote.Checks {
						add(c)
					}
				}
				// The auditor answers its own health: the trail is written and keeps up.
				var audit contract.Health
				if err := a.request(cmd.Context(), nc, a.subj.API("audit", "health"), contract.NewEnvelope(contract.TypeHealthRequest), &audit, 15*time.Second); err != nil {
					add(contract.HealthCheck{Name: "auditor", Detail: err.Error()})
				} else {
					for _, c := range audit.Checks {
						add(c)
					}
				}
				if js, err := jetstream.New(nc); err == nil {
					ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Second)
					_, err = js.Stream(ctx, contract.StreamAudit)
					cancel()
					c := contract.HealthCheck{Name: "audit_stream", OK: err == nil, Detail: contract.StreamAudit + " present"}
					if err != nil {
						c.Detail = err.Error()
					}
					add(c)
				}
			}
			if a.json {
				if err := a.printJSON(h); err != nil {
					return err
				}
			} else {
				t := newTable("")
				for _, c := range h.Checks {
					mark := "OK"
					if !c.OK {
						mark = "FAIL"
					}
					t.row(mark, c.Name, c.Detail)
				}
				if err := t.print(a.stdout); err != nil {
					return err
				}
			}
			if !h.OK {
				return fmt.Errorf("health check failed")
			}
			return nil
		},
	}
}
