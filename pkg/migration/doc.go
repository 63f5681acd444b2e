// Package migration is the Go SDK for migration jobs: programs that change
// a Chroma database and let chromadb-rollback guard the change.
//
// A job announces itself, reports as it goes and obeys control commands:
//
//	chroma.migration.<job>.started     names tenant/database, the pre-migration
//	                                    snapshot (or take_snapshot) and a time limit
//	chroma.migration.<job>.heartbeat   phase and records done
//	chroma.migration.<job>.validation  valid_chunks / total_chunks (per collection too)
//	chroma.migration.<job>.completed   the job finished its work
//	chroma.migration.<job>.failed      the job gave up, with the error
//	chroma.control.<job>               pause, resume, abort sent to the job
//
// Events go through JetStream into the CHROMA_MIGRATIONS stream: a publish
// returns only once the stream has stored the event, and every event carries
// its id as the Nats-Msg-Id header, so a publish that is retried (by the SDK
// after a timeout, or by the caller repeating a failed call with the same
// content) is stored once. The watchdog (services/watchdog) reads the stream,
// keeps the job's record under migration.<job> in the CHROMA_STATE bucket and
// fires the triggers: a validation under its threshold (0.95) or a run past
// its time limit rolls the database back to the pre-migration snapshot.
//
// Control commands arrive on core NATS: a job must be connected to hear
// them. Job subscribes when it is created, so a command sent after New
// returns is never missed; it keeps the latest state (Paused, Aborted) and
// calls the handlers given to OnControl. A job should call WaitWhilePaused
// between units of work (pages, batches) and stop writing as soon as
// Aborted is closed: after an abort the watchdog rolls the database back.
//
// A Job is safe for concurrent use.
package migration
