package main

import (
	"errors"
	"flag"
	"testing"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
)

// Every flag and environment variable of the restorer is in deploy/README.md.
func TestSettingsDocumented(t *testing.T) {
	var err error
	help := testenv.CaptureStderr(t, func() { err = run(t.Context(), []string{"-help"}) })
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("run -help: %v", err)
	}
	testenv.CheckSettingsDocumented(t, help)
}
