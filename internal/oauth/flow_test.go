package oauth_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"stratus/internal/pdstest"
)

func post(text string) map[string]any {
	return map[string]any{"$type": "app.bsky.feed.post", "text": text, "createdAt": time.Now().UTC().Format(time.RFC3339)}
}

func createRecord(did, coll string, rec map[string]any) map[string]any {
	return map[string]any{"repo": did, "collection": coll, "record": rec}
}

// TestFlow drives the whole flow over HTTP: discovery, PAR, the consent
// form, code exchange, an authenticated write, refresh rotation, re-use
// revocation and revocation.
func TestFlow(t *testing.T) {
	srv := pdstest.NewServer(t, relaxed())
	clientID, redirect := metadataServer(t, nil)
	c := newClient(t, srv, clientID)

	// Discovery.
	md := c.do(mustReq(t, "GET", srv.URL()+"/.well-known/oauth-authorization-server"))
	if md.status != 200 || md.str("issuer") != srv.PublicURL() || md.body["require_pushed_authorization_requests"] != true ||
		md.str("pushed_authorization_request_endpoint") != srv.PublicURL()+"/oauth/par" || md.body["client_id_metadata_document_supported"] != true ||
		md.body["authorization_response_iss_parameter_supported"] != true || md.str("jwks_uri") == "" {
		t.Fatalf("server metadata: %d %s", md.status, md.raw)
	}
	for _, k := range []string{"dpop_signing_alg_values_supported", "scopes_supported", "token_endpoint_auth_methods_supported"} {
		if md.body[k] == nil {
			t.Errorf("server metadata lacks %s", k)
		}
	}
	rs := c.do(mustReq(t, "GET", srv.URL()+"/.well-known/oauth-protected-resource"))
	if rs.status != 200 || !strings.Contains(string(rs.raw), `"authorization_servers":["`+srv.PublicURL()+`"]`) {
		t.Fatalf("resource metadata: %d %s", rs.status, rs.raw)
	}

	// PAR without a nonce gets a nonce challenge first.
	nonceless := c.do(formReqDPoP(t, srv.URL()+"/oauth/par", url.Values{"client_id": {clientID}}, c.proof("POST", "/oauth/par", "", nil)))
	if nonceless.status != 400 || nonceless.str("error") != "use_dpop_nonce" || nonceless.header.Get("DPoP-Nonce") == "" {
		t.Fatalf("PAR without nonce: %d %s", nonceless.status, nonceless.raw)
	}
	p := c.par(redirect, "atproto transition:generic", nil)
	if p.status != http.StatusCreated || !strings.HasPrefix(p.str("request_uri"), "urn:ietf:params:oauth:request_uri:") {
		t.Fatalf("PAR: %d %s", p.status, p.raw)
	}

	// The consent page: reloading does not use the request up.
	page, csrf, cookie := c.consentPage(p.str("request_uri"))
	page2, csrf2, _ := c.consentPage(p.str("request_uri"))
	if page.status != 200 || page2.status != 200 || csrf == "" || csrf2 == "" {
		t.Fatalf("consent page: %d/%d\n%s", page.status, page2.status, page.raw)
	}
	html := string(page.raw)
	for _, want := range []string{"Test App", clientID, "Create, change and delete any record", `src="https://app.example.com/logo.png"`} {
		if !strings.Contains(html, want) {
			t.Errorf("consent page lacks %q", want)
		}
	}
	csp := page.header.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "frame-ancestors 'none'", "img-src https://app.example.com"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	if page.header.Get("Referrer-Policy") != "no-referrer" || page.header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("consent page headers: %v", page.header)
	}
	// Wrong password, a wrong CSRF token, no cookie: refused, request kept.
	if a := c.submit(p.str("request_uri"), csrf, cookie, "approve", srv.Handle(), "wrong"); a.status != http.StatusUnauthorized {
		t.Fatalf("wrong password: %d", a.status)
	}
	if a := c.submit(p.str("request_uri"), csrf+"x", cookie, "approve", srv.Handle(), pdstest.Password); a.status != http.StatusForbidden {
		t.Fatalf("bad csrf: %d", a.status)
	}
	if a := c.submit(p.str("request_uri"), csrf, nil, "approve", srv.Handle(), pdstest.Password); a.status != http.StatusForbidden {
		t.Fatalf("no cookie: %d", a.status)
	}
	a := c.submit(p.str("request_uri"), csrf, cookie, "approve", srv.Handle(), pdstest.Password)
	if a.status != http.StatusSeeOther {
		t.Fatalf("approve: %d %s", a.status, a.raw)
	}
	loc, _ := url.Parse(a.header.Get("Location"))
	if !strings.HasPrefix(loc.String(), redirect+"?") || loc.Query().Get("iss") != srv.PublicURL() || loc.Query().Get("state") != p.str("state") {
		t.Fatalf("redirect: %s", loc)
	}
	// The request is used up now.
	if again, _, _ := c.consentPage(p.str("request_uri")); again.status != http.StatusBadRequest {
		t.Fatalf("used request shown again: %d", again.status)
	}

	// Code exchange.
	tok := c.exchange(loc.Query().Get("code"), redirect, p.str("verifier"))
	if tok.status != 200 || tok.str("token_type") != "DPoP" || tok.str("sub") != srv.DID() || tok.str("scope") != "atproto transition:generic" ||
		tok.str("refresh_token") == "" || tok.header.Get("DPoP-Nonce") == "" {
		t.Fatalf("token: %d %s", tok.status, tok.raw)
	}
	if exp, _ := tok.body["expires_in"].(float64); exp <= 0 || exp > 30*60 {
		t.Errorf("expires_in %v", tok.body["expires_in"])
	}
	access := tok.str("access_token")

	// An authenticated write, and its answer carries a nonce.
	w := c.xrpc("POST", "com.atproto.repo.createRecord", access, createRecord(srv.DID(), "app.bsky.feed.post", post("hello from oauth")))
	if w.status != 200 || w.str("uri") == "" || w.header.Get("DPoP-Nonce") == "" {
		t.Fatalf("write: %d %s", w.status, w.raw)
	}
	// getSession without an email scope hides the email.
	gs := c.xrpc("GET", "com.atproto.server.getSession", access, nil)
	if gs.status != 200 || gs.str("did") != srv.DID() || gs.str("email") != "" {
		t.Fatalf("getSession: %d %s", gs.status, gs.raw)
	}
	uiReq := mustReq(t, "GET", srv.URL()+"/oauth/userinfo")
	uiReq.Header.Set("Authorization", "DPoP "+access)
	uiReq.Header.Set("DPoP", c.proof("GET", "/oauth/userinfo", access, nil))
	if ui := c.do(uiReq); ui.status != 200 || ui.str("sub") != srv.DID() || ui.str("preferred_username") != srv.Handle() {
		t.Fatalf("userinfo: %d %s", ui.status, ui.raw)
	}

	// The same token as a Bearer token is refused.
	st, body := srv.Do(t, "GET", "com.atproto.server.getSession", nil, nil, access)
	pdstest.MustError(t, st, body, http.StatusUnauthorized, "InvalidToken")

	// Refresh rotation.
	r1 := c.refresh(tok.str("refresh_token"))
	if r1.status != 200 || r1.str("refresh_token") == "" || r1.str("refresh_token") == tok.str("refresh_token") {
		t.Fatalf("refresh: %d %s", r1.status, r1.raw)
	}
	if old := c.xrpc("GET", "com.atproto.server.getSession", access, nil); old.status != http.StatusUnauthorized {
		t.Fatalf("rotated-away access token: %d", old.status)
	}
	if cur := c.xrpc("GET", "com.atproto.server.getSession", r1.str("access_token"), nil); cur.status != 200 {
		t.Fatalf("new access token: %d %s", cur.status, cur.raw)
	}
	// Re-use of the rotated refresh token revokes the whole grant.
	reuse := c.refresh(tok.str("refresh_token"))
	if reuse.status != 400 || reuse.str("error") != "invalid_grant" {
		t.Fatalf("re-use: %d %s", reuse.status, reuse.raw)
	}
	gone := c.xrpc("GET", "com.atproto.server.getSession", r1.str("access_token"), nil)
	if gone.status != http.StatusUnauthorized || !strings.Contains(gone.header.Get("WWW-Authenticate"), `error="invalid_token"`) {
		t.Fatalf("after re-use: %d %v", gone.status, gone.header)
	}
	if r := c.refresh(r1.str("refresh_token")); r.status != 400 {
		t.Fatalf("refresh of a revoked grant: %d", r.status)
	}

	// Revocation.
	code, verifier := c.authorize(redirect, "atproto transition:generic")
	t2 := c.exchange(code, redirect, verifier)
	if t2.status != 200 {
		t.Fatalf("second token: %d %s", t2.status, t2.raw)
	}
	rv := c.do(formReq(t, srv.URL()+"/oauth/revoke", url.Values{"token": {t2.str("access_token")}, "client_id": {clientID}}))
	if rv.status != 200 {
		t.Fatalf("revoke: %d %s", rv.status, rv.raw)
	}
	if after := c.xrpc("GET", "com.atproto.server.getSession", t2.str("access_token"), nil); after.status != http.StatusUnauthorized {
		t.Fatalf("revoked token: %d", after.status)
	}
	if r := c.refresh(t2.str("refresh_token")); r.status != 400 {
		t.Fatalf("refresh after revoke: %d", r.status)
	}
}

func mustReq(t testing.TB, method, u string) *http.Request {
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

func formReq(t testing.TB, u string, f url.Values) *http.Request {
	req, err := http.NewRequest("POST", u, strings.NewReader(f.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return req
}

func formReqDPoP(t testing.TB, u string, f url.Values, proof string) *http.Request {
	req := formReq(t, u, f)
	req.Header.Set("DPoP", proof)
	return req
}
