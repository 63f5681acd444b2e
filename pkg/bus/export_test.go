package bus

// Hooks for the external tests.

// SetAfterChunk sets a function PutObject runs after each chunk it publishes.
func SetAfterChunk(f func(subject string, n int, data []byte)) { afterChunk = f }

const PutChunkSize = putChunkSize
