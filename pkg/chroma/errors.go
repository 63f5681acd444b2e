package chroma

import (
	"errors"
	"fmt"
	"strings"
)

// ErrNotFound matches, with errors.Is, an *APIError for a missing tenant,
// database or collection (HTTP 404 or a NotFoundError body).
var ErrNotFound = errors.New("chroma: not found")

// ErrAlreadyExists matches, with errors.Is, an *APIError for creating a
// tenant, database or collection that already exists (HTTP 409).
var ErrAlreadyExists = errors.New("chroma: already exists")

// APIError is an error answer from the Chroma server.
type APIError struct {
	// StatusCode is the HTTP status.
	StatusCode int
	// Type is the error class Chroma names, e.g. "NotFoundError",
	// "InvalidArgumentError" or "ChromaError"; empty if the body had none.
	Type string
	// Message is Chroma's explanation, or the start of the raw body.
	Message string
	// Op names the client operation, e.g. `get collection "corpus.v1"`.
	Op string
}

// Error names the operation, the server's message and the status.
func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "chroma: %s: ", e.Op)
	if e.Message != "" {
		b.WriteString(e.Message)
	} else {
		b.WriteString("no message")
	}
	fmt.Fprintf(&b, " (HTTP %d", e.StatusCode)
	if e.Type != "" {
		b.WriteString(" " + e.Type)
	}
	b.WriteString(")")
	return b.String()
}

// Is reports whether e belongs to the class of target (ErrNotFound,
// ErrAlreadyExists).
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.StatusCode == 404 || e.Type == "NotFoundError"
	case ErrAlreadyExists:
		return e.StatusCode == 409
	}
	return false
}

// transient reports whether a retry may succeed.
func (e *APIError) transient() bool {
	return e.StatusCode >= 500 || e.StatusCode == 429 || e.StatusCode == 408
}
