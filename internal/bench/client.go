package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Limits on what the tool reads from a server, so a misbehaving server
// cannot exhaust the load generator's memory.
const (
	maxJSONAnswer = 4 << 20   // any JSON answer
	maxRepoAnswer = 512 << 20 // a getRepo CAR
	maxBlobAnswer = 256 << 20 // a getBlob body
)

// client speaks XRPC to one server with one session's access token. It is
// safe for concurrent use once logged in.
type client struct {
	base    string        // origin, no trailing slash
	bypass  string        // x-ratelimit-bypass value, if any
	timeout time.Duration // bounds each call, to the end of its answer
	http    *http.Client
	// headers holds the request headers for each content type sent, built
	// whenever the token changes. Requests share these maps rather than
	// set the same fields on a fresh one each time: neither http.Client
	// (which copies them before changing anything, for redirects) nor a
	// RoundTripper (bound by its contract not to modify the request)
	// writes to them.
	headers map[string]http.Header
}

func newClient(base, bypass string, conns int, timeout time.Duration) *client {
	c := &client{
		base:    strings.TrimRight(base, "/"),
		bypass:  bypass,
		timeout: timeout,
		// The timeout is a deadline on each call's context rather than
		// http.Client.Timeout, which adds a wrapper of the answer body and
		// more allocations to the same timer and context on every call.
		http: &http.Client{
			Transport: &http.Transport{
				Proxy:               http.ProxyFromEnvironment,
				MaxIdleConns:        conns,
				MaxIdleConnsPerHost: conns,
				IdleConnTimeout:     90 * time.Second,
				ForceAttemptHTTP2:   true,
			},
		},
	}
	c.setToken("")
	return c
}

// Content types of request bodies.
const (
	jsonType  = "application/json"
	bytesType = "application/octet-stream"
)

// setToken builds the request headers that carry the access token. It
// must not be called while requests are under way.
func (c *client) setToken(token string) {
	c.headers = map[string]http.Header{}
	for _, ct := range []string{"", jsonType, bytesType} {
		h := http.Header{}
		if ct != "" {
			h.Set("Content-Type", ct)
		}
		if token != "" {
			h.Set("Authorization", "Bearer "+token)
		}
		if c.bypass != "" {
			h.Set("x-ratelimit-bypass", c.bypass)
		}
		c.headers[ct] = h
	}
}

// RequestError is a failed XRPC call: a transport error or a non-200
// answer.
type RequestError struct {
	Method string // NSID
	Status int    // 0 for transport errors
	Name   string // XRPC error name, if the body was an envelope
	Msg    string
}

func (e *RequestError) Error() string {
	if e.Status == 0 {
		return e.Method + ": " + e.Msg
	}
	if e.Name != "" {
		return fmt.Sprintf("%s: %d %s: %s", e.Method, e.Status, e.Name, e.Msg)
	}
	return fmt.Sprintf("%s: %d: %s", e.Method, e.Status, e.Msg)
}

// answers are the buffers answer bodies are read into, reused so that
// reading a small answer allocates nothing once the buffers have grown.
// Buffers grown past maxJSONAnswer (exports, blobs) are not kept.
var answers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// release hands an answer's buffer back; its bytes must not be used after.
func release(b *bytes.Buffer) {
	if b.Cap() <= maxJSONAnswer {
		b.Reset()
		answers.Put(b)
	}
}

// do sends one request and returns the answer body (read fully, up to
// limit) when the status is 200, in a buffer to hand back with release.
// The body, if any, must not change until do returns.
func (c *client) do(ctx context.Context, method, nsid string, query url.Values, contentType string, body []byte, limit int64) (*bytes.Buffer, error) {
	u := c.base + "/xrpc/" + nsid
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var rd io.Reader // a nil *bytes.Reader would not be a nil io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	if c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel() // after the answer is read: the deadline covers reading it
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, &RequestError{Method: nsid, Msg: err.Error()}
	}
	req.Header = c.headers[contentType]
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, &RequestError{Method: nsid, Msg: err.Error()}
	}
	defer resp.Body.Close()
	buf := answers.Get().(*bytes.Buffer)
	if n := resp.ContentLength; n > 0 && n <= limit {
		buf.Grow(int(n) + bytes.MinRead) // ReadFrom wants room for one more read to see the end
	}
	// Read to the end, so that the connection goes back to the idle pool
	// for the next request.
	if _, err := buf.ReadFrom(io.LimitReader(resp.Body, limit+1)); err != nil {
		release(buf)
		return nil, &RequestError{Method: nsid, Status: resp.StatusCode, Msg: "reading answer: " + err.Error()}
	}
	if int64(buf.Len()) > limit {
		release(buf)
		return nil, &RequestError{Method: nsid, Status: resp.StatusCode, Msg: fmt.Sprintf("answer larger than %d bytes", limit)}
	}
	if resp.StatusCode != http.StatusOK {
		defer release(buf)
		re := &RequestError{Method: nsid, Status: resp.StatusCode}
		var env struct {
			Error   string `json:"error"`
			Message string `json:"message"`
		}
		if json.Unmarshal(buf.Bytes(), &env) == nil && env.Error != "" {
			re.Name, re.Msg = env.Error, env.Message
		} else {
			re.Msg = truncate(buf.String(), 200)
		}
		return nil, re
	}
	return buf, nil
}

// post sends in as JSON (as it is when it is a json.RawMessage, as the
// bodies built by hand are) and decodes a JSON answer into out (if not
// nil).
func (c *client) post(ctx context.Context, nsid string, in, out any) error {
	b, ok := in.(json.RawMessage)
	if !ok {
		var err error
		if b, err = json.Marshal(in); err != nil {
			return &RequestError{Method: nsid, Msg: err.Error()}
		}
	}
	ans, err := c.do(ctx, http.MethodPost, nsid, nil, jsonType, b, maxJSONAnswer)
	if err != nil {
		return err
	}
	defer release(ans)
	return decode(nsid, ans.Bytes(), out)
}

// get sends a query and decodes a JSON answer into out (if not nil).
func (c *client) get(ctx context.Context, nsid string, query url.Values, out any) error {
	ans, err := c.do(ctx, http.MethodGet, nsid, query, "", nil, maxJSONAnswer)
	if err != nil {
		return err
	}
	defer release(ans)
	return decode(nsid, ans.Bytes(), out)
}

// decode unmarshals an answer into out. Nothing in out may refer to b
// afterwards, since b goes back to the pool: json.RawMessage fields are
// copies.
func decode(nsid string, b []byte, out any) error {
	if out == nil {
		return nil
	}
	var err error
	switch out := out.(type) {
	case *writeAnswer:
		err = decodeWriteAnswer(b, out)
	case *recordAnswer:
		err = decodeRecordAnswer(b, out)
	default:
		err = json.Unmarshal(b, out)
	}
	if err != nil {
		return &RequestError{Method: nsid, Status: http.StatusOK, Msg: "answer is not the expected JSON: " + err.Error()}
	}
	return nil
}

// session is what createSession answers that the tool uses.
type session struct {
	AccessJwt string          `json:"accessJwt"`
	DID       string          `json:"did"`
	Handle    string          `json:"handle"`
	DIDDoc    json.RawMessage `json:"didDoc"`
}

// login creates a session and keeps its access token for later calls.
func (c *client) login(ctx context.Context, identifier, password string) (*session, error) {
	var s session
	if err := c.post(ctx, "com.atproto.server.createSession", map[string]string{"identifier": identifier, "password": password}, &s); err != nil {
		return nil, err
	}
	if s.AccessJwt == "" || s.DID == "" {
		return nil, errors.New("createSession answered without accessJwt or did")
	}
	c.setToken(s.AccessJwt)
	return &s, nil
}

func truncate(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
