// Package record holds the columnar record batch shared by the Chroma adapter
// and the archive format, with an exact JSON codec for Chroma metadata and a
// content digest that does not depend on how records were split into batches.
//
// Metadata values are kept as Chroma stores them: string, int64, float64 and
// bool. Integers never pass through float64, so values beyond 2^53 survive,
// and integral floats are encoded with a fraction ("1.0") so Chroma keeps
// them floats.
package record
