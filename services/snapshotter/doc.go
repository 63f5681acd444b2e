// Package snapshotter exports Chroma tenants/databases into verified archives
// in the JetStream object store, and answers the snapshot API
// (chroma.api.snapshot.{create,verify,list,info,delete}) and chroma.api.health.
//
// A snapshot is a job on the CHROMA_CMDS work queue. The worker that takes it
// streams every collection page by page (pages fetched in parallel, written
// in get order) through the archive writer straight into the object store:
// no temporary file and never a whole collection in memory. As it is written,
// an independent reader verifies every entry and content digest of the
// archive, and the put (bus.PutObject) reads every stored chunk back; only
// then is the manifest written to CHROMA_MANIFESTS: the manifest, not the
// object, says a snapshot exists.
//
// What a failure leaves behind: a worker that fails deletes its object and
// terminates the job (an audit event says why). A worker that dies is
// replaced by the next delivery of the same command, which deletes the
// half-written object of the same unique name and starts over; a manifest
// that already exists makes the redelivery a no-op. So a command yields at
// most one snapshot, and a snapshot without a verified manifest never shows.
// An object's chunks are stored under an id derived from its name
// (bus.WithChunkID), so the next delivery also purges the chunks of a put
// whose process was killed before it stored the object's info, which no
// object store reader or listing would see.
package snapshotter
