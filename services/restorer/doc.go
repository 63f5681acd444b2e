// Package restorer rolls Chroma back to a snapshot: it answers
// chroma.api.rollback.{plan,start,status,cancel} (micro service
// "chromadb-restorer") and runs rollback jobs from the CHROMA_CMDS work
// queue (durable consumer "restorer" on chroma.cmd.rollback).
//
// # Plan and start
//
// A plan (the dry run) validates the request, finds the snapshot (by id, or
// the newest of a name), reads its archive in full and checks it (the
// object's SHA-256 against the manifest, every entry checksum and content
// digest, counts and batches against the manifest), then compares the
// snapshot with the target database: per collection create, replace,
// untouched, extra (kept) or drop, upsert for batch-level rollbacks, with
// record counts and an estimate from the add rate the restores into the
// target Chroma measured (kept in CHROMA_STATE under contract.AddRateKey,
// else Config.DefaultAddRate, with an assumed cost of each collection
// written while none was measured; the plan says which), scaled to the
// dimensions of the records written. Nothing is changed. Start computes the same
// plan; without "confirm": true it answers with the plan and why it
// refused. Confirmed, it takes the tenant/database lease for the new
// operation (a second start is refused with a 409 naming the holder),
// records the operation and enqueues the command with the op id as its
// Nats-Msg-Id.
//
// # The job
//
//  1. Verify the archive again; take the lease (the same holder re-takes
//     it after a redelivery) and renew it while the job runs.
//  2. The first attempt fixes the plan against the state it finds and
//     checkpoints it (key checkpoint.<op_id> in CHROMA_STATE). The plan the
//     start answered with is that state when it is under 2 s old: the
//     lease was taken right after it.
//  3. Raise the write fence; send pause to every running migration job of
//     the target database (chroma.control.<job>); they get resume at the
//     end, except the job the rollback undoes.
//  4. Unless waived, have the snapshotter take a safety snapshot of every
//     collection the rollback overwrites or drops, and wait until it is
//     verified: a rollback can itself be rolled back.
//  5. Read the archive once, in order. Each restored collection is written
//     into a staging collection "<target>__rb_<short op id>", created with
//     the archived configuration only and given its metadata by a separate
//     update (created together, hnsw:* keys would make Chroma derive the
//     configuration from the metadata). Batches are added as the archive
//     holds them (pkg/chroma splits them by bytes), each read back by id
//     and compared with the archive: documents (null and "" distinct),
//     URIs, metadata with exact types, and embeddings bit for bit, or in
//     cosine spaces within a tolerance (Chroma normalizes what it stores;
//     the largest difference is reported). Then the whole collection is
//     checked: its count, metadata and configuration. Only then is it
//     swapped in: target -> "<target>__old_<short>", staging -> target,
//     old deleted; readers see the old collection or the restored one
//     (or, for the milliseconds between the two renames, neither), never
//     a half-written one. Once a collection's last batch is sent, the next
//     collection begins: its adds overlap the read-back of the previous
//     one's last batches, its checks, swap and old-collection delete (at
//     most one collection finishes behind the one being written; its
//     failure fails the job, and the job waits for it before step 6).
//     Collections not restored are read on (and verified) while the last
//     adds run. Nothing follows the last collection written, so its last
//     batch is added in two requests, the last eighth apart: the rest is
//     read back while that tail is added, and the tail's read-back starts
//     as soon as it is added, beside the rest's (otherwise batches are
//     read back one at a time; all are compared and checkpointed in
//     order). The archive is opened when the
//     job checks it, and its first batch read while the job plans and
//     raises the fence (unless a safety snapshot comes first); the first
//     collection's staging collection is made while that batch is read,
//     and the batch encoded once, before the archive is read on.
//     In place (in_place) the target is deleted, recreated and filled where
//     readers see it. Batch-level rollbacks replace each record of the named
//     batches in the live collection (delete, then add: Chroma's upsert
//     merges metadata and keeps fields sent as null, so it is not exact).
//  6. Drop the extra collections when asked (drop_extra), check every
//     restored collection once more under its final name, lower the fence,
//     resume the paused jobs, release the lease and audit the outcome with
//     its figures. The operation record holds the plan and a RestoreReport.
//
// # Resuming
//
// A restorer that dies leaves its command unacknowledged; JetStream gives
// it to the next instance after AckWait. The checkpoint says which
// collections are done and, for those in progress (the one being written
// and the one finishing behind it, each with its own stage), how many of
// their archive batches were written and verified, so the next attempt
// skips done collections, finishes the one that was finishing (checks,
// then the swap, or the rest of it) and continues the current one at the
// next batch. Checkpoint saves are serialized, so one
// collection's save never overwrites a later save of the other's.
// Records of a batch written but not yet checkpointed are added again,
// which Chroma ignores for ids it holds; the final count check proves that
// nothing is missing or doubled. A swap cut short is recognised by the
// names that exist (old renamed but staging not, staging renamed but old
// not deleted) and finished. The safety snapshot is asked for once.
//
// # Failure and cancel
//
// A failure (Chroma still unreachable after pkg/chroma's retries, a
// verification difference, a lost lease) ends the operation as failed with
// the reason and, for a verification failure, the differences. The
// collections in progress are put back as they were (a swap cut short is
// reversed, the staging collection deleted); collections already swapped
// in stay restored, which the report lists. The fence is lowered, jobs are
// resumed and the lease released. If Chroma is down even for that cleanup,
// the operation's warnings name what is left, and it is kept under
// leftovers.<op_id> (contract.Leftovers): every restorer retries it every
// Config.LeftoverRetry, holding the database's lease, and once all of it
// is taken back sets the operation's leftovers_cleared_at and notes and
// audits rollback.cleanup (leftovers.go). A rollback started in that
// database first takes them back (leftoversFirst), or is refused. A live
// name made again meanwhile is never touched: the collection renamed aside
// is left beside it.
//
// Cancel (chroma.api.rollback.cancel) is recorded under cancel.<op_id>; the
// job checks it before every batch. With stage-and-swap the collection in
// progress keeps its live data (its staging is deleted) and collections
// already swapped in stay restored, as does one whose last batch was sent
// (its finish completes before the job ends). In place, the collection in
// progress is left partly restored: roll back again, or to the safety
// snapshot. A batch-level rollback stops between batches. The operation ends as
// "cancelled".
//
// What is not undone: if every delivery of a command dies (MaxDeliver), the
// work queue gives up on it and a running restorer fails the operation
// (bus.OnMaxDeliveries) and takes back its staging collections, but the
// fence stays raised, because the data may be half restored; the lease
// expires. Lower the fence by hand (`nats kv del CHROMA_STATE
// fence.<tenant>/<database>`) after checking the data, or roll back again.
package restorer
