package contract

import (
	"fmt"
	"strings"
)

// DefaultPrefix is the first token of every subject.
const DefaultPrefix = "chroma"

// Stream, bucket and object store names. They are filename-safe.
const (
	StreamCommands   = "CHROMA_CMDS"
	StreamMigrations = "CHROMA_MIGRATIONS"
	StreamAudit      = "CHROMA_AUDIT"
	BucketManifests  = "CHROMA_MANIFESTS"
	BucketState      = "CHROMA_STATE"
	ObjectSnapshots  = "CHROMA_SNAPSHOTS"
)

// Subjects builds every subject from one prefix.
type Subjects struct {
	Prefix string
}

// NewSubjects validates prefix (one or more tokens, no wildcards).
func NewSubjects(prefix string) (Subjects, error) {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	for _, tok := range strings.Split(prefix, ".") {
		if err := ValidToken(tok); err != nil {
			return Subjects{}, fmt.Errorf("subject prefix %q: %w", prefix, err)
		}
	}
	return Subjects{Prefix: prefix}, nil
}

func (s Subjects) p() string {
	if s.Prefix == "" {
		return DefaultPrefix
	}
	return s.Prefix
}

// API is the request/reply subject of an endpoint, e.g. API("snapshot", "create").
func (s Subjects) API(noun string, verb ...string) string {
	return strings.Join(append([]string{s.p(), "api", noun}, verb...), ".")
}

// APIGroup is the micro group for a noun, e.g. "chroma.api.snapshot".
func (s Subjects) APIGroup(noun string) string { return s.p() + ".api." + noun }

// Commands is the filter of the durable command stream.
func (s Subjects) Commands() string { return s.p() + ".cmd.>" }

// Command is the subject a long job of kind is enqueued on, e.g. "snapshot".
func (s Subjects) Command(kind string) string { return s.p() + ".cmd." + kind }

// Progress is where an operation's progress is published.
func (s Subjects) Progress(opID string) string { return s.p() + ".progress." + opID }

// Audit is the subject of an audit event for a service and action.
func (s Subjects) Audit(service, action string) string {
	return s.p() + ".audit." + service + "." + strings.ReplaceAll(action, ".", "_")
}

// AuditAll is the filter of the audit stream.
func (s Subjects) AuditAll() string { return s.p() + ".audit.>" }

// Migrations is the filter of the migration stream.
func (s Subjects) Migrations() string { return s.p() + ".migration.>" }

// Control is where a migration job receives pause, resume and abort.
func (s Subjects) Control(job string) string { return s.p() + ".control." + job }

// ValidToken reports whether tok can be one subject token: non-empty, no
// dots, wildcards or whitespace.
func ValidToken(tok string) error {
	if tok == "" {
		return fmt.Errorf("empty subject token")
	}
	if strings.ContainsAny(tok, ".*> \t\r\n") {
		return fmt.Errorf("subject token %q may not contain '.', '*', '>' or whitespace", tok)
	}
	return nil
}
