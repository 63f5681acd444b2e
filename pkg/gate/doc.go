// Package gate is the optional read-only gate: an HTTP reverse proxy in
// front of Chroma that passes reads and, while a rollback holds the write
// fence of a tenant/database, answers writes to it with 503 and Retry-After.
// Chroma itself has no read-only mode; applications that talk to Chroma
// through the gate get one.
//
// The fence of a tenant/database is a contract.Fence stored at
// contract.FenceKey(tenant, database) ("fence.<tenant>/<database>") in the
// CHROMA_STATE bucket while it is raised. KVFences follows those keys and
// answers from memory; the gate asks it per request, so it costs no NATS
// round trip.
//
// Classify tells reads from writes by method and path (Chroma v2 API):
// GET, HEAD and OPTIONS are reads, and so are POST .../get, .../query,
// .../search and .../count; every other method is a write. The tenant and
// database come from /api/v2/tenants/{t}/databases/{d}/...; a database
// creation is scoped by the name in its body (the only body the gate
// reads, at most MaxClassifyBody bytes). Writes the gate does not recognize
// are fenced by the tenant/database their path names, so an endpoint added
// by a newer Chroma is refused rather than let through.
//
// A Gate keeps no state of its own besides a count of writes in flight:
// a restorer running one in-process calls Quiesce after raising the fence,
// so a write admitted just before the fence was seen cannot land in the
// middle of a rollback.
package gate
