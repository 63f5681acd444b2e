package bus

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/nats-io/nats.go/micro"
)

// Handler wraps a micro endpoint of a service: it runs h and turns a panic
// into an error reply. Each endpoint has its own subscription, so a slow
// one does not hold up the others. h must reply before it returns: micro
// reads the request's error after Handle returns, so replying from another
// goroutine races with it.
func Handler(ctx context.Context, log *slog.Logger, h func(context.Context, micro.Request)) micro.Handler {
	return micro.HandlerFunc(func(r micro.Request) {
		defer func() {
			if p := recover(); p != nil {
				log.Error("handler panic", "subject", r.Subject(), "panic", p)
				RespondError(r, contract.CodeInternal, fmt.Sprintf("internal error: %v", p), "")
			}
		}()
		h(ctx, r)
	})
}

// RespondError sends an error reply: the code and text in the
// Nats-Service-Error headers and an ErrorBody that says what to fix.
func RespondError(r micro.Request, code int, msg, field string) {
	RespondErrorBody(r, contract.ErrorBody{Code: code, Error: msg, Field: field})
}

// RespondErrorBody sends body as an error reply, as RespondError does: for
// a body with more than a code, a text and a field.
func RespondErrorBody(r micro.Request, body contract.ErrorBody) {
	body.Type = contract.TypeError
	data, _ := json.Marshal(body)
	_ = r.Error(fmt.Sprint(body.Code), body.Error, data)
}

// RespondJSON sends v as the reply. A reply that cannot be sent (larger
// than the connection's max payload) is answered with an error saying so,
// where the asker would otherwise wait for it until its timeout.
func RespondJSON(r micro.Request, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		RespondError(r, contract.CodeInternal, "encode reply: "+err.Error(), "")
		return
	}
	if err := r.Respond(data); err != nil {
		RespondError(r, contract.CodeInternal, fmt.Sprintf("the reply (%d bytes) could not be sent: %v", len(data), err), "")
	}
}

// DecodeQuery is DecodeRequest for a query that needs nothing (a listing,
// a status): an empty body (a `nats req` without one) is one too, but
// a body that is not JSON is still refused rather than ignored.
func DecodeQuery(r micro.Request) (code int, msg string) {
	if len(r.Data()) == 0 {
		return 0, ""
	}
	var v map[string]any
	return DecodeRequest(r, &v)
}

// DecodeRequest parses a request body into v, bounding its size. On failure
// it returns the error code to answer with and what to fix; code 0 means v
// holds the request.
func DecodeRequest(r micro.Request, v any) (code int, msg string) {
	data := r.Data()
	if len(data) > contract.MaxRequestBytes {
		return contract.CodeTooLarge, fmt.Sprintf("request is %d bytes; at most %d", len(data), contract.MaxRequestBytes)
	}
	if len(data) == 0 {
		return contract.CodeBadRequest, "empty request: send a JSON object"
	}
	if err := json.Unmarshal(data, v); err != nil {
		return contract.CodeBadRequest, fmt.Sprintf("malformed JSON request: %v", err)
	}
	return 0, ""
}
