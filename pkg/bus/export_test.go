package bus

// Hooks for the external tests.

// SetAfterChunk sets a function PutObject runs after each chunk it publishes.
func SetAfterChunk(f func(subject string, n int, data []byte)) { afterChunk = f }

// SetBeforeChunk sets a function PutObject runs on each chunk after
// hashing it and before publishing it.
func SetBeforeChunk(f func(n int, data []byte)) { beforeChunk = f }

const PutChunkSize = putChunkSize
