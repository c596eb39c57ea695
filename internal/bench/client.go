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
// safe for concurrent use.
type client struct {
	base   string // origin, no trailing slash
	token  string
	bypass string // x-ratelimit-bypass value, if any
	http   *http.Client
}

func newClient(base, bypass string, conns int, timeout time.Duration) *client {
	return &client{
		base:   strings.TrimRight(base, "/"),
		bypass: bypass,
		http: &http.Client{
			Timeout: timeout,
			Transport: &http.Transport{
				Proxy:               http.ProxyFromEnvironment,
				MaxIdleConns:        conns,
				MaxIdleConnsPerHost: conns,
				IdleConnTimeout:     90 * time.Second,
				ForceAttemptHTTP2:   true,
			},
		},
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

// do sends one request and returns the answer body (read fully, up to
// limit) when the status is 200.
func (c *client) do(ctx context.Context, method, nsid string, query url.Values, contentType string, body io.Reader, limit int64) ([]byte, error) {
	u := c.base + "/xrpc/" + nsid
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, &RequestError{Method: nsid, Msg: err.Error()}
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if c.bypass != "" {
		req.Header.Set("x-ratelimit-bypass", c.bypass)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, &RequestError{Method: nsid, Msg: err.Error()}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, &RequestError{Method: nsid, Status: resp.StatusCode, Msg: "reading answer: " + err.Error()}
	}
	if int64(len(b)) > limit {
		return nil, &RequestError{Method: nsid, Status: resp.StatusCode, Msg: fmt.Sprintf("answer larger than %d bytes", limit)}
	}
	if resp.StatusCode != http.StatusOK {
		re := &RequestError{Method: nsid, Status: resp.StatusCode}
		var env struct {
			Error   string `json:"error"`
			Message string `json:"message"`
		}
		if json.Unmarshal(b, &env) == nil && env.Error != "" {
			re.Name, re.Msg = env.Error, env.Message
		} else {
			re.Msg = truncate(string(b), 200)
		}
		return nil, re
	}
	return b, nil
}

// post sends in as JSON and decodes a JSON answer into out (if not nil).
func (c *client) post(ctx context.Context, nsid string, in, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return &RequestError{Method: nsid, Msg: err.Error()}
	}
	ans, err := c.do(ctx, http.MethodPost, nsid, nil, "application/json", bytes.NewReader(b), maxJSONAnswer)
	if err != nil {
		return err
	}
	return decode(nsid, ans, out)
}

// get sends a query and decodes a JSON answer into out (if not nil).
func (c *client) get(ctx context.Context, nsid string, query url.Values, out any) error {
	ans, err := c.do(ctx, http.MethodGet, nsid, query, "", nil, maxJSONAnswer)
	if err != nil {
		return err
	}
	return decode(nsid, ans, out)
}

func decode(nsid string, b []byte, out any) error {
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
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
	c.token = s.AccessJwt
	return &s, nil
}

func truncate(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
