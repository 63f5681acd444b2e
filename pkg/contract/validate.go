package contract

import (
	"fmt"
	"regexp"
	"unicode"
	"unicode/utf8"
)

// Error codes carried in Nats-Service-Error-Code.
const (
	CodeBadRequest         = 400
	CodeNotFound           = 404
	CodeConflict           = 409
	CodeTooLarge           = 413
	CodeVerificationFailed = 422
	CodeInternal           = 500
	CodeUnavailable        = 503
)

// MaxRequestBytes bounds every API request body.
const MaxRequestBytes = 64 << 10

var snapshotNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// ValidateSnapshotName checks a human snapshot name.
func ValidateSnapshotName(name string) error {
	if name == "" {
		return fmt.Errorf("name is required (e.g. pre_migration_2025-11-30)")
	}
	if !snapshotNameRE.MatchString(name) {
		return fmt.Errorf("name %q is invalid: use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit", name)
	}
	return nil
}

// ValidateChromaName checks a tenant, database or collection name for what
// can never be valid in Chroma, before any request is sent.
func ValidateChromaName(field, name string) error {
	if name == "" {
		return fmt.Errorf("%s is empty", field)
	}
	if len(name) > 512 {
		return fmt.Errorf("%s is %d bytes long; at most 512", field, len(name))
	}
	if !utf8.ValidString(name) {
		return fmt.Errorf("%s %q is not valid UTF-8", field, name)
	}
	for _, r := range name {
		if unicode.IsControl(r) {
			return fmt.Errorf("%s %q contains a control character", field, name)
		}
	}
	return nil
}
