// Package contract is the wire contract of chromadb-rollback on NATS: subject
// names, stream and bucket names, and the versioned JSON message types that
// services, the CLI and migration jobs exchange.
//
// Every payload carries a "type" naming a versioned message type, an "id" and
// an RFC 3339 UTC "time". Fields are only ever added; a breaking change is a
// new type. Subjects are built only through Subjects, never by hand, and no
// token is ever a raw collection name (names may contain dots).
package contract
