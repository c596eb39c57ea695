package identity

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/bluesky-social/indigo/atproto/syntax"
)

// maxPLCResponseBytes caps how much of a PLC directory response is read.
const maxPLCResponseBytes = 1 << 20

// maxPLCErrorMessage caps the length of a directory message kept in a [PLCError].
const maxPLCErrorMessage = 512

// ErrNotFound is matched (with errors.Is) by a [PLCError] for a 404 answer,
// i.e. the DID is not registered with the directory.
var ErrNotFound = errors.New("did not found in plc directory")

// PLCError is a non-2xx answer from a PLC directory.
type PLCError struct {
	// StatusCode is the HTTP status of the answer.
	StatusCode int
	// Message is the directory's "message" field, or else the trimmed body.
	Message string
}

// Error implements error.
func (e *PLCError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("plc directory: status %d", e.StatusCode)
	}
	return fmt.Sprintf("plc directory: status %d: %s", e.StatusCode, e.Message)
}

// Is reports whether target is [ErrNotFound] and the answer was a 404.
func (e *PLCError) Is(target error) bool {
	return target == ErrNotFound && e.StatusCode == http.StatusNotFound
}

// PLCClient talks to a PLC directory.
type PLCClient struct {
	// URL is the directory base URL, e.g. "https://plc.directory" (a trailing
	// slash is ignored).
	URL string
	// HTTPClient sends the requests; http.DefaultClient when nil.
	HTTPClient *http.Client
}

// Submit posts a signed operation for did to the directory.
func (c *PLCClient) Submit(ctx context.Context, did syntax.DID, op *Operation) error {
	if op == nil {
		return errors.New("submit plc op: missing operation")
	}
	body, err := json.Marshal(op)
	if err != nil {
		return fmt.Errorf("submit plc op: encode: %w", err)
	}
	resp, err := c.do(ctx, http.MethodPost, did.String(), did, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("submit plc op: %w", err)
	}
	defer resp.Body.Close()
	if _, err := readLimited(resp.Body); err != nil {
		return fmt.Errorf("submit plc op: %w", err)
	}
	return nil
}

// Document fetches the current DID document of did from the directory. A
// DID the directory does not know yields an error matching [ErrNotFound].
func (c *PLCClient) Document(ctx context.Context, did syntax.DID) (*Document, error) {
	resp, err := c.do(ctx, http.MethodGet, did.String(), did, nil)
	if err != nil {
		return nil, fmt.Errorf("fetch did document: %w", err)
	}
	defer resp.Body.Close()
	b, err := readLimited(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("fetch did document: %w", err)
	}
	var doc Document
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("fetch did document: decode: %w", err)
	}
	if doc.ID != did {
		return nil, fmt.Errorf("fetch did document: document id %q does not match %q", doc.ID, did)
	}
	return &doc, nil
}

// do sends a request for path (relative to the directory URL) about did
// and returns the response if its status is 2xx; otherwise it closes the
// body and returns a *PLCError.
func (c *PLCClient) do(ctx context.Context, method, path string, did syntax.DID, body io.Reader) (*http.Response, error) {
	if did.Method() != "plc" {
		return nil, fmt.Errorf("not a did:plc: %q", did)
	}
	base := strings.TrimRight(c.URL, "/")
	if base == "" {
		return nil, errors.New("missing plc directory url")
	}
	req, err := http.NewRequestWithContext(ctx, method, base+"/"+path, body)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	hc := c.HTTPClient
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return resp, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxPLCResponseBytes))
	return nil, &PLCError{StatusCode: resp.StatusCode, Message: errorMessage(b)}
}

// readLimited reads r fully, failing if it holds more than maxPLCResponseBytes.
func readLimited(r io.Reader) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxPLCResponseBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read response: %w", err)
	}
	if len(b) > maxPLCResponseBytes {
		return nil, fmt.Errorf("read response: body exceeds %d bytes", maxPLCResponseBytes)
	}
	return b, nil
}

// errorMessage extracts a short message from an error response body: the
// JSON "message" (or "error") field when present, else the trimmed text.
func errorMessage(body []byte) string {
	var parsed struct {
		Message string `json:"message"`
		Error   string `json:"error"`
	}
	msg := ""
	if json.Unmarshal(body, &parsed) == nil {
		msg = parsed.Message
		if msg == "" {
			msg = parsed.Error
		}
	}
	if msg == "" {
		msg = string(body)
	}
	msg = strings.Join(strings.Fields(msg), " ")
	if len(msg) > maxPLCErrorMessage {
		cut := maxPLCErrorMessage
		for cut > 0 && !utf8.RuneStart(msg[cut]) {
			cut--
		}
		msg = msg[:cut] + "…"
	}
	return msg
}
