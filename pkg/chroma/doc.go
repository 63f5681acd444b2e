// Package chroma is an exact client for Chroma's v2 HTTP API (server 1.0),
// built on net/http and encoding/json for the data path of a backup tool.
//
// Exactness:
//   - Embeddings are decoded straight into float32 (never through float64,
//     which would round some values differently) and are sent base64-encoded
//     as little-endian float32 bytes when the server supports it, so l2 and
//     ip collections round-trip bit-exactly. Cosine collections are
//     normalized by the server and may differ by about one ULP.
//   - Metadata goes through record.Metadata: ints stay int64 (beyond 2^53),
//     integral floats stay floats.
//   - Documents and URIs keep null distinct from "".
//
// Requests are sized by encoded bytes as well as record count, because the
// server refuses bodies over 40 MiB (413, or sometimes a broken pipe).
//
// Transient failures (connection errors, timeouts, 408, 429, 5xx, a body cut
// short) are retried with exponential backoff up to a bounded elapsed time;
// other 4xx answers are returned at once as *APIError. Every retried request
// is safe to repeat: gets and counts are reads, and Chroma silently ignores
// an add of an id it already holds. A create or delete whose answer was lost
// can, on its retry, report ErrAlreadyExists or ErrNotFound.
package chroma
