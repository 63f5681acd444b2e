// Package cluster holds the fault-injection and scale-out tests of
// chromadb-rollback (issue 6): the services, two instances of each, on the
// 3-node JetStream cluster of deploy/nats (R3 streams, buckets and object
// store, each service with its own user), against a real Chroma server.
//
//   - a stream leader killed during a snapshot (the object store's, or the
//     command stream's) and during a restore (the object store's, or the
//     state bucket's);
//   - a service instance killed mid-operation while another runs;
//   - Chroma restarted mid-restore;
//   - the snapshot, damage, rollback flow and the watchdog flow with two
//     instances of every service, each command run exactly once;
//   - Bootstrap run by several instances at once, and against streams that
//     exist with other settings.
//
// Faults are injected at a chosen request: each service instance talks to
// Chroma through its own proxy, which counts the requests by kind (get,
// add, ...) and calls the test's hook before passing one on.
//
// The package holds only tests; this file documents them.
package cluster
