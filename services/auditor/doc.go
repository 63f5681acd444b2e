// Package auditor writes the audit stream (CHROMA_AUDIT) into a
// tamper-evident JSONL trail, contract.AuditTrailFile under its data dir,
// and answers chroma.api.audit.query and chroma.api.audit.verify (micro
// service "chromadb-auditor").
//
// # The trail
//
// Each line is a contract.AuditTrailEntry: the message's stream sequence,
// the time the stream stored it, its subject, the event as published
// (compacted onto one line), and a SHA-256 chain: an entry's hash covers
// its canonical JSON, which holds the previous entry's hash. Editing a
// line breaks its own hash; deleting, inserting or moving one breaks the
// chain at the line after; cutting whole lines off the end is seen by the
// running auditor, which knows where it stopped, and by comparing with
// the stream, which holds every event the trail must.
//
// # Writing, crashes and restarts
//
// The auditor owns one durable consumer (AckAll). It takes messages in
// stream order, writes a batch in one write, fsyncs, and only then acks
// the batch's last message. A message whose event id is already in the
// trail (a re-sent event outside the stream's dedup window) is acked and
// not written, so each event is in the trail once.
//
// A kill leaves at most a batch written but unacknowledged, and perhaps a
// last line cut short. On start the trail is read: a last line without a
// newline was never acknowledged and is cut off (logged); the head (last
// sequence and hash) and the event ids are known again. The consumer is
// then aligned to the trail: kept when it acknowledged exactly the trail
// with nothing in flight, otherwise made anew to start right after the
// last entry. Redelivered messages at or below the last sequence are
// skipped, so nothing is written twice and nothing is skipped.
//
// The auditor appends only to the file it wrote: when the file at the
// path is another one or has another size, it stops writing (health says
// so) and leaves the evidence as it is; it goes on once the file is back
// as it was, or after a restart, which takes the file as it then is.
//
// The auditor never publishes into the audit stream: the trail is a
// function of the stream alone.
package auditor
