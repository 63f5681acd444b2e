// Package bus is the JetStream side of chromadb-rollback: it creates the
// streams, key-value buckets and object store that DESIGN.md fixes, and
// publishes audit events and progress. Services share NATS only through it.
package bus
