package oauth_test

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync/atomic"
	"testing"

	"stratus/internal/config"
	"stratus/internal/pdstest"
)

// An OAuth token reaches only the proxied methods and services its rpc:
// scopes name, both when the server forwards a call and when it mints a
// service token.
func TestProxyRespectsRPCScopes(t *testing.T) {
	const appViewDID = "did:web:appview.test"
	var forwarded atomic.Int32
	av := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		forwarded.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"feed":[]}`))
	}))
	defer av.Close()
	srv := pdstest.NewServer(t, relaxed(), pdstest.WithLoopbackServices(), pdstest.WithConfig(func(c *config.Config) {
		c.AppViewDID, c.AppViewURL = appViewDID, av.URL
	}))
	scope := "atproto rpc:app.bsky.feed.getTimeline?aud=" + url.QueryEscape(appViewDID+"#bsky_appview")
	clientID, redirect := metadataServer(t, func(md map[string]any) { md["scope"] = scope })
	c := newClient(t, srv, clientID)
	code, verifier := c.authorize(redirect, scope)
	tok := c.exchange(code, redirect, verifier)
	if tok.status != 200 {
		t.Fatalf("token: %d %s", tok.status, tok.raw)
	}
	access := tok.str("access_token")

	if a := c.xrpc("GET", "app.bsky.feed.getTimeline", access, nil); a.status != 200 {
		t.Fatalf("getTimeline within scope: %d %s", a.status, a.raw)
	}
	if forwarded.Load() != 1 {
		t.Fatalf("forwarded %d requests, want 1", forwarded.Load())
	}
	for _, nsid := range []string{"app.bsky.actor.getProfile", "chat.bsky.convo.listConvos"} {
		if a := c.xrpc("GET", nsid, access, nil); a.status != http.StatusForbidden || a.str("error") != "InsufficientScope" {
			t.Errorf("%s outside scope: %d %s", nsid, a.status, a.raw)
		}
	}
	if forwarded.Load() != 1 {
		t.Fatalf("a refused call was forwarded (%d requests)", forwarded.Load())
	}
	q := "?aud=" + url.QueryEscape(appViewDID+"#bsky_appview") + "&lxm="
	if a := c.xrpc("GET", "com.atproto.server.getServiceAuth"+q+"app.bsky.feed.getTimeline", access, nil); a.status != 200 || a.str("token") == "" {
		t.Errorf("service token within scope: %d %s", a.status, a.raw)
	}
	if a := c.xrpc("GET", "com.atproto.server.getServiceAuth"+q+"app.bsky.actor.getProfile", access, nil); a.status != http.StatusForbidden {
		t.Errorf("service token outside scope: %d %s", a.status, a.raw)
	}
}
