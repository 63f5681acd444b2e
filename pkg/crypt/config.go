package crypt

import (
	"fmt"
	"os"
)

// The environment variables that default the --age-* flags.
const (
	EnvRecipients     = "AGE_RECIPIENTS"
	EnvRecipientsFile = "AGE_RECIPIENTS_FILE"
	EnvIdentityFile   = "AGE_IDENTITY_FILE"
)

// Config says where a program's keys come from: the flags --age-recipients,
// --age-recipients-file and --age-identity-file, defaulting from
// AGE_RECIPIENTS, AGE_RECIPIENTS_FILE and AGE_IDENTITY_FILE. It holds
// paths and public keys only.
type Config struct {
	Recipients     string
	RecipientsFile string
	IdentityFile   string
}

// ConfigFromEnv is the Config the environment gives, the flags' defaults.
func ConfigFromEnv() Config {
	return Config{
		Recipients:     os.Getenv(EnvRecipients),
		RecipientsFile: os.Getenv(EnvRecipientsFile),
		IdentityFile:   os.Getenv(EnvIdentityFile),
	}
}

// Load reads the recipients and the identities; each is nil when not
// configured. Errors name the flag to fix.
func (c Config) Load() (*Recipients, *Identities, error) {
	r, err := LoadRecipients(c.Recipients, c.RecipientsFile)
	if err != nil {
		return nil, nil, fmt.Errorf("--age-recipients / --age-recipients-file: %w", err)
	}
	id, err := LoadIdentities(c.IdentityFile)
	if err != nil {
		return nil, nil, fmt.Errorf("--age-identity-file: %w", err)
	}
	return r, id, nil
}
