//go:build race

package auditor

const raceEnabled = true
