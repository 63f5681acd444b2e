// Package crypt encrypts snapshot archives at rest with age
// (filippo.io/age, X25519 recipients), and decrypts them with an identity.
//
// The snapshotter only needs Recipients, the public keys (age1...): it can
// write archives it cannot read back. Whoever restores or fully verifies an
// archive needs Identities, the secret keys (AGE-SECRET-KEY-1...), loaded
// from a file. An encrypted archive is the whole native archive stream
// (zstd tar) wrapped in one age file; the object store and the manifest's
// sha256 then hold the ciphertext's digest.
//
// Secrets never leave this package in text: Identities prints, logs and
// marshals as its file and public keys only, and errors about an identity
// file name the line, never its content.
//
// Errors classify what went wrong: ErrNoIdentity (the archive is encrypted
// and no identity is configured), ErrCannotDecrypt (no configured identity
// matches the archive's recipients) and ErrDamaged (the ciphertext is
// truncated, altered or not an age file). Errors of the underlying reader
// (the object store) pass through unchanged, so their own classes (such as
// a digest mismatch) still match.
package crypt
