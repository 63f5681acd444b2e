// Package fence keeps the two guards of a mutating operation in the
// CHROMA_STATE bucket: the lease, which lets one operation at a time change a
// tenant/database, and the write fence, which tells migration jobs and the
// read-only gate that writes must stop while it is raised.
//
// A lease is a contract.Lease under contract.LeaseKey. It is taken with a
// compare-and-set: Create when the key is free, Update on the revision read
// when the lease there has expired or belongs to the same holder (so a
// redelivered command re-takes its own lease instead of locking itself out).
// It is renewed by compare-and-set on the revision it was written with, so a
// holder that lost its lease learns it (ErrLost) instead of overwriting the
// new holder. Release deletes it only while it is still the holder's.
//
// A fence is a contract.Fence under contract.FenceKey. Raise and Lower are
// idempotent; Lower removes the fence only if the same operation raised it,
// so a stale holder cannot lower the fence of the operation that replaced it.
//
// What a crash leaves behind: a lease that is never renewed expires after its
// TTL and can be taken over; a fence stays raised until its operation (or its
// redelivered command) lowers it, because a half-done restore must keep
// writers out. An operator can remove a stale fence with
// `nats kv del CHROMA_STATE fence.<tenant>/<database>`.
package fence
