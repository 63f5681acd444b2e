package chroma

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/cenkalti/backoff/v4"
)

// Defaults applied by New.
const (
	// DefaultRetryMaxElapsed bounds how long one call keeps retrying.
	DefaultRetryMaxElapsed = 30 * time.Second
	// DefaultMaxRequestBytes is how many bytes of records an add or
	// upsert body holds; a record larger than that on its own is sent
	// alone, up to ServerMaxBodyBytes.
	DefaultMaxRequestBytes = 32 << 20
	// ServerMaxBodyBytes is the largest body Chroma takes (it answers 413
	// over exactly 40 MiB): another client may have stored a record that
	// large, which a restore must be able to write back.
	ServerMaxBodyBytes = 40 << 20
	// DefaultAttemptTimeout bounds one HTTP attempt (request and response
	// body), so a hung server is retried instead of waited on forever.
	DefaultAttemptTimeout = 2 * time.Minute
	// DefaultListPageSize is the page size of ListCollections.
	DefaultListPageSize = 100
)

// AuthHeader selects how the token is sent.
type AuthHeader int

const (
	// AuthXChromaToken sends "X-Chroma-Token: <token>" (the default).
	AuthXChromaToken AuthHeader = iota
	// AuthBearer sends "Authorization: Bearer <token>".
	AuthBearer
)

// Option configures a Client.
type Option func(*Client) error

// WithToken sends token on every request, in the header chosen by
// WithAuthHeader.
func WithToken(token string) Option {
	return func(c *Client) error { c.token = token; return nil }
}

// WithAuthHeader chooses the header that carries the token.
func WithAuthHeader(h AuthHeader) Option {
	return func(c *Client) error {
		if h != AuthXChromaToken && h != AuthBearer {
			return fmt.Errorf("chroma: unknown auth header %d", h)
		}
		c.authHeader = h
		return nil
	}
}

// WithHTTPClient replaces the default HTTP client (which keeps up to 16 idle
// connections per host for parallel readers).
func WithHTTPClient(hc *http.Client) Option {
	return func(c *Client) error {
		if hc == nil {
			return errors.New("chroma: nil http client")
		}
		c.hc = hc
		return nil
	}
}

// WithLogger logs retries to l (at debug level for each retry).
func WithLogger(l *slog.Logger) Option {
	return func(c *Client) error {
		if l != nil {
			c.log = l
		}
		return nil
	}
}

// WithRetryMaxElapsed bounds the time a call spends retrying transient
// failures; 0 disables retries.
func WithRetryMaxElapsed(d time.Duration) Option {
	return func(c *Client) error {
		if d < 0 {
			return errors.New("chroma: negative retry max elapsed")
		}
		c.retryMaxElapsed = d
		return nil
	}
}

// WithAttemptTimeout bounds one HTTP attempt, response body included.
func WithAttemptTimeout(d time.Duration) Option {
	return func(c *Client) error {
		if d <= 0 {
			return errors.New("chroma: attempt timeout must be positive")
		}
		c.attemptTimeout = d
		return nil
	}
}

// WithMaxRequestBytes caps the encoded size of one add or upsert request;
// a record larger than n on its own is refused. Without it, requests hold
// DefaultMaxRequestBytes of records and a larger record goes alone, up to
// ServerMaxBodyBytes.
func WithMaxRequestBytes(n int) Option {
	return func(c *Client) error {
		if n < 1024 {
			return fmt.Errorf("chroma: max request bytes %d is under 1 KiB", n)
		}
		c.maxRequestBytes = n
		c.maxRecordBytes = n
		return nil
	}
}

// WithMaxBatchSize caps the records of one add or upsert request. Without
// it the server's max_batch_size (pre-flight checks) is used.
func WithMaxBatchSize(n int) Option {
	return func(c *Client) error {
		if n < 1 {
			return fmt.Errorf("chroma: max batch size %d must be positive", n)
		}
		c.maxBatchSize = n
		return nil
	}
}

// WithListPageSize sets the page size ListCollections asks for.
func WithListPageSize(n int) Option {
	return func(c *Client) error {
		if n < 1 {
			return fmt.Errorf("chroma: list page size %d must be positive", n)
		}
		c.listPageSize = n
		return nil
	}
}

// Client talks to one Chroma server. It is safe for concurrent use.
type Client struct {
	base            string // scheme://host[/prefix], no trailing slash
	hc              *http.Client
	log             *slog.Logger
	token           string
	authHeader      AuthHeader
	retryMaxElapsed time.Duration
	attemptTimeout  time.Duration
	maxRequestBytes int
	maxRecordBytes  int // the largest body of one record
	maxBatchSize    int
	listPageSize    int

	mu        sync.Mutex
	preflight *Preflight // cached for Add and Upsert
}

// New returns a client for the server at baseURL (e.g.
// "http://localhost:8000"; a path prefix is kept for servers behind a proxy).
func New(baseURL string, opts ...Option) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		var ue *url.Error // its text repeats the URL, credentials included
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("chroma: base URL %q: %w", RedactURL(baseURL), err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("chroma: base URL %q: scheme must be http or https", RedactURL(baseURL))
	}
	if u.Host == "" {
		return nil, fmt.Errorf("chroma: base URL %q has no host", RedactURL(baseURL))
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("chroma: base URL %q must not have a query or fragment", RedactURL(baseURL))
	}
	u.User = nil
	c := &Client{
		base:            strings.TrimRight(u.String(), "/"),
		log:             slog.New(slog.DiscardHandler),
		retryMaxElapsed: DefaultRetryMaxElapsed,
		attemptTimeout:  DefaultAttemptTimeout,
		maxRequestBytes: DefaultMaxRequestBytes,
		maxRecordBytes:  ServerMaxBodyBytes,
		listPageSize:    DefaultListPageSize,
	}
	for _, o := range opts {
		if err := o(c); err != nil {
			return nil, err
		}
	}
	if c.hc == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConns = 64
		t.MaxIdleConnsPerHost = 16
		c.hc = &http.Client{Transport: t}
	}
	return c, nil
}

// BaseURL is the server address the client was made for.
func (c *Client) BaseURL() string { return c.base }

// Log attribute keys.
const (
	logKeyOp      = "op"
	logKeyAttempt = "attempt"
	logKeyWait    = "wait"
	logKeyErr     = "err"
)

// do sends one request, retrying transient failures, and decodes a 2xx
// JSON answer into out (if not nil) with decode (if not nil) or json.
// body is resent from the start on every attempt.
func (c *Client) do(ctx context.Context, op, method, path string, body []byte, decode func(io.Reader) error) error {
	attempt := 0
	// last is the last attempt's failure that the caller's context did not
	// cause: the deadline may end an attempt in flight, after others failed.
	var last error
	operation := func() error {
		attempt++
		err := c.attempt(ctx, op, method, path, body, decode)
		if err == nil {
			return nil
		}
		if ctx.Err() == nil || !errors.Is(err, ctx.Err()) {
			last = err
		}
		if ctx.Err() != nil {
			return backoff.Permanent(err)
		}
		var ae *APIError
		if errors.As(err, &ae) && !ae.transient() {
			return backoff.Permanent(err)
		}
		var pe permanentError
		if errors.As(err, &pe) {
			return backoff.Permanent(pe.err)
		}
		return err
	}
	if c.retryMaxElapsed == 0 {
		err := operation()
		var pe *backoff.PermanentError
		if errors.As(err, &pe) {
			return pe.Err
		}
		return err
	}
	b := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(100*time.Millisecond),
		backoff.WithMaxInterval(5*time.Second),
		backoff.WithMaxElapsedTime(c.retryMaxElapsed),
	)
	err := backoff.RetryNotify(operation, backoff.WithContext(b, ctx), func(err error, wait time.Duration) {
		c.log.DebugContext(ctx, "chroma request retried",
			slog.String(logKeyOp, op), slog.Int(logKeyAttempt, attempt),
			slog.Duration(logKeyWait, wait), slog.Any(logKeyErr, err))
	})
	if err != nil && attempt > 1 {
		var ae *APIError
		if !errors.As(err, &ae) && ctx.Err() == nil {
			return fmt.Errorf("%w (after %d attempts)", err, attempt)
		}
	}
	if err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()) && last != nil {
		// The caller's deadline ended the retries: say what kept failing
		// (Chroma refusing connections, say), not only that time ran out.
		return fmt.Errorf("%w (after %d attempts, the last: %v)", err, attempt, last)
	}
	return err
}

// permanentError marks a failure no retry can fix (a malformed answer).
type permanentError struct{ err error }

func (p permanentError) Error() string { return p.err.Error() }
func (p permanentError) Unwrap() error { return p.err }

func (c *Client) attempt(ctx context.Context, op, method, path string, body []byte, decode func(io.Reader) error) error {
	ctx, cancel := context.WithTimeout(ctx, c.attemptTimeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return permanentError{fmt.Errorf("chroma: %s: %w", op, err)}
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		if c.authHeader == AuthBearer {
			req.Header.Set("Authorization", "Bearer "+c.token)
		} else {
			req.Header.Set("X-Chroma-Token", c.token)
		}
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("chroma: %s: %w", op, err)
	}
	defer func() {
		// Drain a little so the connection can be reused.
		_, _ = io.CopyN(io.Discard, resp.Body, 4096)
		resp.Body.Close()
	}()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return readAPIError(op, resp)
	}
	if decode == nil {
		return nil
	}
	br := &errReader{r: resp.Body, size: resp.ContentLength}
	if err := decode(br); err != nil {
		if br.err != nil || errors.Is(err, io.ErrUnexpectedEOF) || isTimeout(err) {
			// The connection broke mid-body: worth another try.
			return fmt.Errorf("chroma: %s: read response: %w", op, err)
		}
		return permanentError{fmt.Errorf("chroma: %s: decode response: %w", op, err)}
	}
	return nil
}

// errReader remembers a read error other than EOF, telling a broken
// connection apart from a malformed answer.
type errReader struct {
	r    io.Reader
	err  error
	size int64 // Content-Length, -1 when unknown
}

// ContentLength is the body's announced size, -1 when unknown.
func (e *errReader) ContentLength() int64 { return e.size }

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF {
		e.err = err
	}
	return n, err
}

// NotAnswering says err is Chroma not answering in time: an attempt or the
// caller's deadline ran out while waiting for it (a hung or overloaded
// server, or one behind a dead network), not a refusal or a broken reply.
func NotAnswering(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || isTimeout(err)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func readAPIError(op string, resp *http.Response) error {
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	ae := &APIError{StatusCode: resp.StatusCode, Op: op}
	var body struct {
		Error   string `json:"error"`
		Message string `json:"message"`
	}
	if json.Unmarshal(raw, &body) == nil && (body.Error != "" || body.Message != "") {
		ae.Type, ae.Message = body.Error, body.Message
	} else {
		msg := strings.TrimSpace(string(raw))
		if len(msg) > 200 {
			n := 200
			for n > 0 && !utf8.RuneStart(msg[n]) { // cut between characters
				n--
			}
			msg = msg[:n] + "..."
		}
		if msg == "" {
			msg = http.StatusText(resp.StatusCode)
		}
		ae.Message = msg
	}
	return ae
}

// jsonInto returns a decoder of a JSON answer into v.
func jsonInto(v any) func(io.Reader) error {
	return func(r io.Reader) error { return json.NewDecoder(r).Decode(v) }
}

func (c *Client) getJSON(ctx context.Context, op, path string, out any) error {
	var dec func(io.Reader) error
	if out != nil {
		dec = jsonInto(out)
	}
	return c.do(ctx, op, http.MethodGet, path, nil, dec)
}

func (c *Client) sendJSON(ctx context.Context, op, method, path string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("chroma: %s: encode request: %w", op, err)
	}
	var dec func(io.Reader) error
	if out != nil {
		dec = jsonInto(out)
	}
	return c.do(ctx, op, method, path, body, dec)
}

// Paths. Every segment is escaped: names may hold dots or any Unicode.
func tenantPath(tenant string) string { return "/api/v2/tenants/" + url.PathEscape(tenant) }

func dbPath(tenant, db string) string {
	return tenantPath(tenant) + "/databases/" + url.PathEscape(db)
}

func collPath(tenant, db, nameOrID string) string {
	return dbPath(tenant, db) + "/collections/" + url.PathEscape(nameOrID)
}

func checkNames(op string, kv ...string) error {
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "" {
			return fmt.Errorf("chroma: %s: %s name must not be empty", op, kv[i])
		}
	}
	return nil
}
