// Package testenv starts the real components tests need: an embedded
// JetStream server and a real Chroma server from the pinned npm package in
// .tools (installed by `make tools`), and seeds fixtures into Chroma. It never
// skips: a missing tool is a test failure that says to run `make tools`.
package testenv
