package oauth_test

import (
	"crypto/sha256"
	"encoding/base64"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"

	"stratus/internal/pdstest"
)

func wantOAuthError(t *testing.T, a answer, status int, code string) {
	t.Helper()
	if a.status != status || a.str("error") != code {
		t.Fatalf("got %d %s, want %d %s", a.status, a.raw, status, code)
	}
}

func TestRefusals(t *testing.T) {
	srv := pdstest.NewServer(t, relaxed())
	clientID, redirect := metadataServer(t, nil)

	t.Run("authorize without PAR", func(t *testing.T) {
		c := newClient(t, srv, clientID)
		a := c.do(mustReq(t, "GET", srv.URL()+"/oauth/authorize?"+url.Values{"response_type": {"code"}, "client_id": {clientID},
			"redirect_uri": {redirect}, "code_challenge": {randString()}, "state": {"x"}}.Encode()))
		if a.status != 400 || !strings.Contains(string(a.raw), "Pushed authorization requests are required") {
			t.Fatalf("%d %s", a.status, a.raw)
		}
	})
	t.Run("deny", func(t *testing.T) {
		c := newClient(t, srv, clientID)
		p := c.par(redirect, "atproto", nil)
		_, csrf, cookie := c.consentPage(p.str("request_uri"))
		a := c.submit(p.str("request_uri"), csrf, cookie, "deny", "", "")
		loc, _ := url.Parse(a.header.Get("Location"))
		if a.status != 303 || loc.Query().Get("error") != "access_denied" || loc.Query().Get("iss") != srv.PublicURL() || loc.Query().Get("state") != p.str("state") {
			t.Fatalf("deny: %d %s", a.status, loc)
		}
		if again, _, _ := c.consentPage(p.str("request_uri")); again.status != 400 {
			t.Fatalf("denied request shown again: %d", again.status)
		}
	})
	t.Run("app password refused", func(t *testing.T) {
		sess := srv.Login(t, srv.Handle(), pdstest.Password)
		var ap struct {
			Password string `json:"password"`
		}
		srv.Call(t, "POST", "com.atproto.server.createAppPassword", nil, map[string]any{"name": "oauth-test"}, sess.AccessJWT, &ap)
		c := newClient(t, srv, clientID)
		p := c.par(redirect, "atproto", nil)
		_, csrf, cookie := c.consentPage(p.str("request_uri"))
		if a := c.submit(p.str("request_uri"), csrf, cookie, "approve", srv.Handle(), ap.Password); a.status != 401 {
			t.Fatalf("app password accepted: %d", a.status)
		}
	})
	t.Run("prompt none", func(t *testing.T) {
		c := newClient(t, srv, clientID)
		p := c.par(redirect, "atproto", func(f url.Values) { f.Set("prompt", "none") })
		page, _, _ := c.consentPage(p.str("request_uri"))
		loc, _ := url.Parse(page.header.Get("Location"))
		if page.status != 303 || loc.Query().Get("error") != "login_required" {
			t.Fatalf("prompt=none: %d %s", page.status, loc)
		}
	})
	t.Run("plain PKCE", func(t *testing.T) {
		c := newClient(t, srv, clientID)
		wantOAuthError(t, c.par(redirect, "atproto", func(f url.Values) { f.Set("code_challenge_method", "plain") }), 400, "invalid_request")
	})
	t.Run("missing PKCE", func(t *testing.T) {
		c := newClient(t, srv, clientID)
		wantOAuthError(t, c.par(redirect, "atproto", func(f url.Values) { f.Del("code_challenge") }), 400, "invalid_request")
	})
	t.Run("redirect URI mismatch at PAR", func(t *testing.T) {
		c := newClient(t, srv, clientID)
		wantOAuthError(t, c.par(redirect+"/other", "atproto", nil), 400, "invalid_request")
	})
	t.Run("undeclared scope", func(t *testing.T) {
		c := newClient(t, srv, clientID)
		wantOAuthError(t, c.par(redirect, "atproto identity:handle", nil), 400, "invalid_scope")
		wantOAuthError(t, c.par(redirect, "transition:generic", nil), 400, "invalid_scope")
		wantOAuthError(t, c.par(redirect, "atproto include:com.example.auth", nil), 400, "invalid_scope")
	})
	t.Run("PAR without DPoP", func(t *testing.T) {
		c := newClient(t, srv, clientID)
		a := c.postForm("/oauth/par", url.Values{"client_id": {clientID}}, func() string { return "" })
		wantOAuthError(t, a, 400, "invalid_dpop_proof")
	})
	t.Run("code challenge re-use", func(t *testing.T) {
		c := newClient(t, srv, clientID)
		first := c.par(redirect, "atproto", nil)
		if first.status != 201 {
			t.Fatal(first.status)
		}
		h := sha256.Sum256([]byte(first.str("verifier")))
		challenge := base64.RawURLEncoding.EncodeToString(h[:])
		wantOAuthError(t, c.par(redirect, "atproto", func(f url.Values) { f.Set("code_challenge", challenge) }), 400, "invalid_request")
	})
	t.Run("wrong verifier", func(t *testing.T) {
		c := newClient(t, srv, clientID)
		code, _ := c.authorize(redirect, "atproto")
		wantOAuthError(t, c.exchange(code, redirect, randString()), 400, "invalid_grant")
	})
	t.Run("redirect URI mismatch at token", func(t *testing.T) {
		c := newClient(t, srv, clientID)
		code, verifier := c.authorize(redirect, "atproto")
		wantOAuthError(t, c.exchange(code, redirect+"?x=1", verifier), 400, "invalid_grant")
	})
	t.Run("code re-use revokes the grant", func(t *testing.T) {
		c := newClient(t, srv, clientID)
		code, verifier := c.authorize(redirect, "atproto transition:generic")
		tok := c.exchange(code, redirect, verifier)
		if tok.status != 200 {
			t.Fatal(tok.status)
		}
		wantOAuthError(t, c.exchange(code, redirect, verifier), 400, "invalid_grant")
		if a := c.xrpc("GET", "com.atproto.server.getSession", tok.str("access_token"), nil); a.status != 401 {
			t.Fatalf("token of a re-used code still works: %d", a.status)
		}
	})
	t.Run("code exchanged with another DPoP key", func(t *testing.T) {
		c := newClient(t, srv, clientID)
		code, verifier := c.authorize(redirect, "atproto")
		c.key = newKey(t)
		wantOAuthError(t, c.exchange(code, redirect, verifier), 400, "invalid_grant")
	})

	// DPoP proof checks at the token endpoint.
	c := newClient(t, srv, clientID)
	code, verifier := c.authorize(redirect, "atproto transition:generic")
	form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirect}, "code_verifier": {verifier}, "client_id": {clientID}}
	for _, tc := range []struct {
		name string
		edit func(map[string]any)
		want string
	}{
		{"wrong htu (Host header)", func(m map[string]any) { m["htu"] = srv.URL() + "/oauth/token" }, "invalid_dpop_proof"},
		{"wrong htu path", func(m map[string]any) { m["htu"] = srv.PublicURL() + "/oauth/par" }, "invalid_dpop_proof"},
		{"wrong htm", func(m map[string]any) { m["htm"] = "GET" }, "invalid_dpop_proof"},
		{"stale iat", func(m map[string]any) { m["iat"] = time.Now().Add(-10 * time.Minute).Unix() }, "invalid_dpop_proof"},
		{"future iat", func(m map[string]any) { m["iat"] = time.Now().Add(10 * time.Minute).Unix() }, "invalid_dpop_proof"},
		{"ath at the token endpoint", func(m map[string]any) { m["ath"] = "abc" }, "invalid_dpop_proof"},
		{"bad nonce", func(m map[string]any) { m["nonce"] = "stale" }, "use_dpop_nonce"},
		{"no jti", func(m map[string]any) { delete(m, "jti") }, "invalid_dpop_proof"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := c.do(formReqDPoP(t, srv.URL()+"/oauth/token", form, c.proof("POST", "/oauth/token", "", tc.edit)))
			wantOAuthError(t, a, 400, tc.want)
		})
	}
	t.Run("private key in proof", func(t *testing.T) {
		p := signJWT(t, c.key, map[string]any{"typ": "dpop+jwt", "jwk": c.key}, map[string]any{"jti": randString(), "htm": "POST",
			"htu": srv.PublicURL() + "/oauth/token", "iat": time.Now().Unix(), "nonce": c.nonce})
		wantOAuthError(t, c.do(formReqDPoP(t, srv.URL()+"/oauth/token", form, p)), 400, "invalid_dpop_proof")
	})
	t.Run("DPoP replay", func(t *testing.T) {
		p := c.proof("POST", "/oauth/token", "", nil)
		first := c.do(formReqDPoP(t, srv.URL()+"/oauth/token", form, p))
		if first.status != 200 {
			t.Fatalf("first use: %d %s", first.status, first.raw)
		}
		wantOAuthError(t, c.do(formReqDPoP(t, srv.URL()+"/oauth/token", form, p)), 400, "invalid_dpop_proof")

		// Key mismatch on refresh ends the grant.
		other := newClient(t, srv, clientID)
		other.nonce = c.nonce
		wantOAuthError(t, other.refresh(first.str("refresh_token")), 400, "invalid_grant")
		wantOAuthError(t, c.refresh(first.str("refresh_token")), 400, "invalid_grant")

		// Resource-server refusals.
		access := first.str("access_token")
		req := func(edit func(map[string]any), scheme string) answer {
			r := mustReq(t, "GET", srv.URL()+"/xrpc/com.atproto.server.getSession")
			r.Header.Set("Authorization", scheme+" "+access)
			r.Header.Set("DPoP", c.proof("GET", "/xrpc/com.atproto.server.getSession", access, edit))
			return c.do(r)
		}
		for name, a := range map[string]answer{
			"revoked grant": req(nil, "DPoP"),
			"bad ath":       req(func(m map[string]any) { m["ath"] = "x" }, "DPoP"),
		} {
			if a.status != 401 || !strings.Contains(a.header.Get("WWW-Authenticate"), `DPoP error="invalid_token"`) {
				t.Errorf("%s: %d %v %s", name, a.status, a.header, a.raw)
			}
		}
		if a := req(func(m map[string]any) { m["nonce"] = "old" }, "DPoP"); a.status != 401 || a.str("error") != "use_dpop_nonce" ||
			!strings.Contains(a.header.Get("WWW-Authenticate"), `use_dpop_nonce`) || a.header.Get("DPoP-Nonce") == "" {
			t.Errorf("resource nonce challenge: %d %v %s", a.status, a.header, a.raw)
		}
	})
}

// TestScopeEnforcement checks per-resource denials with a narrow grant.
func TestScopeEnforcement(t *testing.T) {
	srv := pdstest.NewServer(t, relaxed())
	clientID, redirect := metadataServer(t, nil)
	c := newClient(t, srv, clientID)
	code, verifier := c.authorize(redirect, "atproto transition:email repo:app.bsky.feed.post?action=create blob:image/*")
	tok := c.exchange(code, redirect, verifier)
	if tok.status != 200 {
		t.Fatalf("token: %d %s", tok.status, tok.raw)
	}
	access := tok.str("access_token")
	did := srv.DID()
	ok := c.xrpc("POST", "com.atproto.repo.createRecord", access, createRecord(did, "app.bsky.feed.post", post("allowed")))
	if ok.status != 200 {
		t.Fatalf("allowed create: %d %s", ok.status, ok.raw)
	}
	rkey := ok.str("uri")[strings.LastIndex(ok.str("uri"), "/")+1:]
	like := map[string]any{"$type": "app.bsky.feed.like", "createdAt": time.Now().UTC().Format(time.RFC3339),
		"subject": map[string]any{"uri": ok.str("uri"), "cid": ok.str("cid")}}
	for name, a := range map[string]answer{
		"create other collection": c.xrpc("POST", "com.atproto.repo.createRecord", access, createRecord(did, "app.bsky.feed.like", like)),
		"put (needs update)": c.xrpc("POST", "com.atproto.repo.putRecord", access, map[string]any{"repo": did,
			"collection": "app.bsky.feed.post", "rkey": rkey, "record": post("edited")}),
		"delete": c.xrpc("POST", "com.atproto.repo.deleteRecord", access, map[string]any{"repo": did, "collection": "app.bsky.feed.post", "rkey": rkey}),
		"applyWrites with a delete": c.xrpc("POST", "com.atproto.repo.applyWrites", access, map[string]any{"repo": did, "writes": []any{
			map[string]any{"$type": "com.atproto.repo.applyWrites#create", "collection": "app.bsky.feed.post", "value": post("x")},
			map[string]any{"$type": "com.atproto.repo.applyWrites#delete", "collection": "app.bsky.feed.post", "rkey": rkey},
		}}),
	} {
		if a.status != 403 || a.str("error") != "InsufficientScope" {
			t.Errorf("%s: %d %s", name, a.status, a.raw)
		}
	}
	aw := c.xrpc("POST", "com.atproto.repo.applyWrites", access, map[string]any{"repo": did, "writes": []any{
		map[string]any{"$type": "com.atproto.repo.applyWrites#create", "collection": "app.bsky.feed.post", "value": post("batch")},
	}})
	if aw.status != 200 {
		t.Errorf("allowed applyWrites: %d %s", aw.status, aw.raw)
	}
	// Owner-only and undeclared methods are refused to OAuth tokens.
	for _, nsid := range []string{"com.atproto.server.createAppPassword", "com.atproto.server.deactivateAccount", "app.stratus.admin.rotateJwtSecret"} {
		if a := c.xrpc("POST", nsid, access, map[string]any{"name": "x"}); a.status != 403 {
			t.Errorf("%s: %d %s", nsid, a.status, a.raw)
		}
	}
	if a := c.xrpc("GET", "com.atproto.server.listAppPasswords", access, nil); a.status != 403 {
		t.Errorf("listAppPasswords: %d %s", a.status, a.raw)
	}
	// transition:email shows the email.
	if gs := c.xrpc("GET", "com.atproto.server.getSession", access, nil); gs.status != 200 || gs.str("email") == "" {
		t.Errorf("getSession with transition:email: %d %s", gs.status, gs.raw)
	}
}

// TestLoopbackClient runs the flow with the http://localhost development
// client, whose redirect URI matches on any port.
func TestLoopbackClient(t *testing.T) {
	srv := pdstest.NewServer(t) // no relaxed fetching needed: nothing is fetched
	clientID := "http://localhost?" + url.Values{"redirect_uri": {"http://127.0.0.1/callback"}, "scope": {"atproto transition:generic"}}.Encode()
	c := newClient(t, srv, clientID)
	code, verifier := c.authorize("http://127.0.0.1:43123/callback", "atproto transition:generic")
	tok := c.exchange(code, "http://127.0.0.1:43123/callback", verifier)
	if tok.status != 200 {
		t.Fatalf("token: %d %s", tok.status, tok.raw)
	}
	if a := c.xrpc("POST", "com.atproto.repo.createRecord", tok.str("access_token"), createRecord(srv.DID(), "app.bsky.feed.post", post("dev"))); a.status != 200 {
		t.Fatalf("write: %d %s", a.status, a.raw)
	}
	wantOAuthError(t, c.par("http://127.0.0.1:43123/other", "atproto", nil), 400, "invalid_request")
	for _, bad := range []string{"http://localhost:8080", "http://localhost/path", "http://localhost?foo=bar", "http://localhost?redirect_uri=https%3A%2F%2Fevil.example%2F"} {
		wantOAuthError(t, newClient(t, srv, bad).par("http://127.0.0.1/", "atproto", nil), 401, "invalid_client")
	}
}

// TestClientMetadataSSRF: with the default (strict) fetcher, client_ids
// that point at the server's own network are refused before any fetch.
func TestClientMetadataSSRF(t *testing.T) {
	srv := pdstest.NewServer(t)
	local, redirect := metadataServer(t, nil)
	for _, id := range []string{
		local, // http and 127.0.0.1
		"https://127.0.0.1/client-metadata.json",
		"https://[::1]/client-metadata.json",
		"https://10.0.0.1/client-metadata.json",
		"https://169.254.169.254/latest/meta-data",
		"https://metadata.localhost/client-metadata.json",
		"https://app.example.com:8443/client-metadata.json",
		"https://user:pw@app.example.com/client-metadata.json",
		"https://app.example.com/",
		"ftp://app.example.com/client-metadata.json",
	} {
		a := newClient(t, srv, id).par(redirect, "atproto", nil)
		if a.str("error") != "invalid_client" {
			t.Errorf("%s: %d %s", id, a.status, a.raw)
		}
	}
}

// TestClientMetadataValidation refuses documents that break the spec.
func TestClientMetadataValidation(t *testing.T) {
	srv := pdstest.NewServer(t, relaxed())
	for name, edit := range map[string]func(map[string]any){
		"no dpop binding":    func(m map[string]any) { delete(m, "dpop_bound_access_tokens") },
		"no atproto scope":   func(m map[string]any) { m["scope"] = "transition:generic" },
		"no code grant":      func(m map[string]any) { m["grant_types"] = []string{"refresh_token"} },
		"foreign redirect":   func(m map[string]any) { m["redirect_uris"] = []string{"https://evil.example/cb"} },
		"client_id mismatch": func(m map[string]any) { m["client_id"] = "https://other.example/client-metadata.json" },
		"secret auth method": func(m map[string]any) { m["token_endpoint_auth_method"] = "client_secret_basic" },
		"keyless confidental": func(m map[string]any) {
			m["token_endpoint_auth_method"] = "private_key_jwt"
			m["token_endpoint_auth_signing_alg"] = "ES256"
		},
	} {
		t.Run(name, func(t *testing.T) {
			id, redirect := metadataServer(t, edit)
			a := newClient(t, srv, id).par(redirect, "atproto", nil)
			if a.status < 400 || (a.str("error") != "invalid_client_metadata" && a.str("error") != "invalid_client") {
				t.Fatalf("%d %s", a.status, a.raw)
			}
		})
	}
}

// TestConfidentialClient authenticates with private_key_jwt and refuses a
// replayed assertion.
func TestConfidentialClient(t *testing.T) {
	srv := pdstest.NewServer(t, relaxed())
	clientKey := newKey(t)
	clientKey.Set(jwk.KeyIDKey, "k1")
	pub := publicOf(t, clientKey)
	var clientID string
	clientID, redirect := metadataServer(t, func(m map[string]any) {
		m["token_endpoint_auth_method"] = "private_key_jwt"
		m["token_endpoint_auth_signing_alg"] = "ES256"
		m["jwks"] = map[string]any{"keys": []any{pub}}
	})
	c := newClient(t, srv, clientID)
	assertion := func() string {
		return signJWT(t, clientKey, map[string]any{"kid": "k1"}, map[string]any{"iss": clientID, "sub": clientID,
			"aud": srv.PublicURL(), "jti": randString(), "iat": time.Now().Unix(), "exp": time.Now().Add(time.Minute).Unix()})
	}
	c.assert = assertion
	code, verifier := c.authorize(redirect, "atproto transition:generic")
	tok := c.exchange(code, redirect, verifier)
	if tok.status != 200 {
		t.Fatalf("token: %d %s", tok.status, tok.raw)
	}
	// A replayed assertion is refused.
	replayed := assertion()
	f := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok.str("refresh_token")}, "client_id": {clientID},
		"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}, "client_assertion": {replayed}}
	if a := c.postForm("/oauth/token", f, nil); a.status != 200 {
		t.Fatalf("refresh: %d %s", a.status, a.raw)
	} else {
		tok = a
	}
	f.Set("refresh_token", tok.str("refresh_token"))
	wantOAuthError(t, c.postForm("/oauth/token", f, nil), 401, "invalid_client")
	// Without an assertion the confidential client is refused.
	c.assert = nil
	wantOAuthError(t, c.refresh(tok.str("refresh_token")), 401, "invalid_client")
}
