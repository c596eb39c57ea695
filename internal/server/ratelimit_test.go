package server_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"testing"

	"stratus/internal/config"
	"stratus/internal/pdstest"
)

// Ensure createSession is limited per identifier and client address: the
// 31st attempt within five minutes is refused with 429 and ratelimit
// headers, other identifiers are unaffected, and the bypass key exempts.
func TestCreateSession_RateLimit(t *testing.T) {
	t.Parallel()
	const bypass = "load-test-bypass-key-0123"
	s := pdstest.NewServer(t, pdstest.WithConfig(func(c *config.Config) { c.RateLimitBypass = bypass }))
	attempt := func(identifier string, header http.Header) (*http.Response, []byte) {
		body, _ := json.Marshal(map[string]string{"identifier": identifier, "password": "wrong-password"})
		h := http.Header{"Content-Type": {"application/json"}}
		for k, v := range header {
			h[k] = v
		}
		return s.Raw(t, http.MethodPost, "/xrpc/com.atproto.server.createSession", h, bytes.NewReader(body))
	}
	for i := 1; i <= 30; i++ {
		resp, b := attempt(s.Handle(), nil)
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("attempt %d: %d %s", i, resp.StatusCode, b)
		}
		if got, want := resp.Header.Get("RateLimit-Remaining"), strconv.Itoa(30-i); got != want {
			t.Fatalf("attempt %d: RateLimit-Remaining = %q, want %q", i, got, want)
		}
	}
	resp, b := attempt(s.Handle(), nil)
	pdstest.MustError(t, resp.StatusCode, b, http.StatusTooManyRequests, "RateLimitExceeded")
	for _, h := range []string{"RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", "RateLimit-Policy"} {
		if resp.Header.Get(h) == "" {
			t.Errorf("429 without %s", h)
		}
	}
	// The handle in another case is the same identifier.
	resp, _ = attempt("ALICE.test", nil)
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("mixed-case identifier escaped the limit: %d", resp.StatusCode)
	}
	// X-Forwarded-For from an untrusted peer does not buy a new address.
	resp, _ = attempt(s.Handle(), http.Header{"X-Forwarded-For": {"203.0.113.9"}})
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("spoofed X-Forwarded-For escaped the limit: %d", resp.StatusCode)
	}
	// The account's DID and an "@" prefix are the same account too.
	for _, id := range []string{s.DID(), "@" + s.Handle()} {
		if resp, _ := attempt(id, nil); resp.StatusCode != http.StatusTooManyRequests {
			t.Errorf("%s escaped the limit: %d", id, resp.StatusCode)
		}
	}
	// Another identifier has its own budget.
	resp, _ = attempt("bob.test", nil)
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("other identifier: %d, want 401", resp.StatusCode)
	}
	// The operator's bypass key exempts trusted load tests.
	resp, _ = attempt(s.Handle(), http.Header{"X-Ratelimit-Bypass": {bypass}})
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("bypass key: %d, want 401", resp.StatusCode)
	}
}
