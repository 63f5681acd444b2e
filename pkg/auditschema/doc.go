// Package auditschema publishes the JSON Schemas (draft 2020-12) of the
// audit events in the CHROMA_AUDIT stream and validates events against them.
//
// An audit event is a contract.AuditEvent: an envelope (type, id, time,
// service, action, outcome, actor, reason, error, related ids) and figures.
// Each action has one schema, v1/<action>.schema.json, which narrows the
// envelope (audit_event.schema.json) to that action: the service that emits
// it, the outcomes it can have, its figures with their types, and which
// fields and figures each outcome carries. The schemas are closed: a field
// or figure a schema does not name fails validation, and so does an action
// without a schema, so a producer that adds either must document it here in
// the same change (every service's tests validate the events they caused).
//
// The version is the event's type (chromadb-rollback.v1.audit_event): v1
// only gains optional fields and figures, which consumers must ignore when
// they do not know them; a breaking change is a new type with its own
// directory of schemas (v2/).
package auditschema
