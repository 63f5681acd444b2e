// Package metrics is the Prometheus side of chromadb-rollback: one Registry
// per process holds the series the services update when an operation ends
// (snapshot and restore durations, records and bytes, failures by reason,
// watchdog triggers), gauges read from JetStream at scrape time (raised
// fences, age of the newest verified snapshot per database, audit lag) and
// the health checks that /healthz answers with.
//
// Every method of a nil *Registry does nothing, so a service built without
// metrics needs no checks. Scrape-time reads are bounded by a short timeout:
// a slow or unreachable JetStream costs a scrape at most that long, and the
// series it could not read are left out while
// chromadb_rollback_state_scrape_ok says 0.
package metrics
