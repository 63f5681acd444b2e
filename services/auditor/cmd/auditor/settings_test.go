package main

import (
	"testing"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
)

func TestSettingsDocumented(t *testing.T) { testenv.CheckSettingsDocumented(t, run) }
