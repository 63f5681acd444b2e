package auditschema

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"
	"sync"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/santhosh-tekuri/jsonschema/v6"
)

//go:embed v1/*.schema.json
var files embed.FS

// BaseURL is where the schema files are published; each file's $id is
// BaseURL + "<version>/<file>".
const BaseURL = "https://github.com/chromadb-rollback/chromadb-rollback/raw/main/pkg/auditschema/"

// EnvelopeFile is the schema every action's schema refers to.
const EnvelopeFile = "audit_event.schema.json"

const suffix = ".schema.json"

// versions maps an audit event type to the directory of its schemas.
var versions = map[string]string{contract.TypeAuditEvent: "v1"}

var (
	// ErrUnknownType is returned for an event whose type has no schemas.
	ErrUnknownType = errors.New("unknown audit event type")
	// ErrUnknownAction is returned for an action without a schema.
	ErrUnknownAction = errors.New("no schema for audit action")
)

// compiled holds every action's schema, by version directory then action.
var compiled = sync.OnceValues(func() (map[string]map[string]*jsonschema.Schema, error) {
	out := map[string]map[string]*jsonschema.Schema{}
	for _, dir := range versions {
		byAction, err := compile(dir)
		if err != nil {
			return nil, err
		}
		out[dir] = byAction
	}
	return out, nil
})

func compile(dir string) (map[string]*jsonschema.Schema, error) {
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	c.UseLoader(jsonschema.SchemeURLLoader{}) // everything is embedded: never read files or the network
	names, err := fs.Glob(files, dir+"/*"+suffix)
	if err != nil {
		return nil, err
	}
	for _, name := range names {
		data, err := files.ReadFile(name)
		if err != nil {
			return nil, err
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("decode %s: %w", name, err)
		}
		if err := c.AddResource(BaseURL+name, doc); err != nil {
			return nil, fmt.Errorf("add %s: %w", name, err)
		}
	}
	out := map[string]*jsonschema.Schema{}
	for _, name := range names {
		file := path.Base(name)
		if file == EnvelopeFile {
			continue
		}
		sch, err := c.Compile(BaseURL + name)
		if err != nil {
			return nil, fmt.Errorf("compile %s: %w", name, err)
		}
		out[strings.TrimSuffix(file, suffix)] = sch
	}
	return out, nil
}

// Validate checks one audit event, the JSON body of a message in the audit
// stream, against the schema of its type and action. An unknown type or an
// action without a schema is an error (ErrUnknownType, ErrUnknownAction).
func Validate(data []byte) error {
	all, err := compiled()
	if err != nil {
		return fmt.Errorf("audit schemas: %w", err)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("decode audit event: %w", err)
	}
	obj, ok := inst.(map[string]any)
	if !ok {
		return errors.New("audit event is not a JSON object")
	}
	typ, _ := obj["type"].(string)
	dir, ok := versions[typ]
	if !ok {
		return fmt.Errorf("%w %q: want %s", ErrUnknownType, typ, contract.TypeAuditEvent)
	}
	action, _ := obj["action"].(string)
	sch := all[dir][action]
	if sch == nil {
		return fmt.Errorf("%w %q: add pkg/auditschema/%s/%s%s", ErrUnknownAction, action, dir, action, suffix)
	}
	if err := sch.Validate(inst); err != nil {
		id, _ := obj["id"].(string)
		return fmt.Errorf("audit event %s (%s, id %s) does not match %s%s: %w", action, obj["outcome"], id, action, suffix, err)
	}
	return nil
}

// Actions lists the actions that have a schema in the current version, sorted.
func Actions() []string {
	all, err := compiled()
	if err != nil {
		return nil
	}
	out := make([]string, 0, len(all[versions[contract.TypeAuditEvent]]))
	for a := range all[versions[contract.TypeAuditEvent]] {
		out = append(out, a)
	}
	slices.Sort(out)
	return out
}

// Schema returns the schema file of action in the current version.
func Schema(action string) ([]byte, bool) {
	data, err := files.ReadFile(versions[contract.TypeAuditEvent] + "/" + action + suffix)
	return data, err == nil
}
