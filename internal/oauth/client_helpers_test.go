package oauth_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"

	"stratus/internal/config"
	"stratus/internal/pdstest"
	"stratus/internal/safehttp"
)

// relaxed lets the server fetch client metadata from a local test server.
func relaxed() pdstest.Option {
	return pdstest.WithConfig(func(c *config.Config) {
		c.OAuthFetch = safehttp.Options{AllowHTTP: true, AllowPrivate: true}
	})
}

func newKey(t testing.TB) jwk.Key {
	t.Helper()
	raw, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := jwk.Import(raw)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func publicOf(t testing.TB, k jwk.Key) jwk.Key {
	t.Helper()
	pub, err := k.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

func randString() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func signJWT(t testing.TB, key jwk.Key, hdr map[string]any, claims map[string]any) string {
	t.Helper()
	h := jws.NewHeaders()
	for k, v := range hdr {
		if err := h.Set(k, v); err != nil {
			t.Fatal(err)
		}
	}
	payload, _ := json.Marshal(claims)
	out, err := jws.Sign(payload, jws.WithKey(jwa.ES256(), key, jws.WithProtectedHeaders(h)))
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// client is an OAuth client for tests: it builds real DPoP proofs with its
// own P-256 key and follows the server's nonces.
type client struct {
	t      testing.TB
	srv    *pdstest.Server
	http   *http.Client
	key    jwk.Key
	nonce  string
	id     string
	assert func() string // client assertion of a confidential client
}

func newClient(t testing.TB, srv *pdstest.Server, clientID string) *client {
	return &client{t: t, srv: srv, id: clientID, key: newKey(t), http: &http.Client{
		Timeout:       30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// proof builds a DPoP proof for method and path on the server's public
// URL; edit changes claims before signing.
func (c *client) proof(method, path, token string, edit func(map[string]any)) string {
	claims := map[string]any{
		"jti": randString(), "htm": method, "htu": c.srv.PublicURL() + path, "iat": time.Now().Unix(),
	}
	if c.nonce != "" {
		claims["nonce"] = c.nonce
	}
	if token != "" {
		h := sha256.Sum256([]byte(token))
		claims["ath"] = base64.RawURLEncoding.EncodeToString(h[:])
	}
	if edit != nil {
		edit(claims)
	}
	return signJWT(c.t, c.key, map[string]any{"typ": "dpop+jwt", "jwk": publicOf(c.t, c.key)}, claims)
}

type answer struct {
	status int
	header http.Header
	body   map[string]any
	raw    []byte
}

func (a answer) str(k string) string { s, _ := a.body[k].(string); return s }

func (c *client) do(req *http.Request) answer {
	c.t.Helper()
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	a := answer{status: resp.StatusCode, header: resp.Header, raw: b}
	json.Unmarshal(b, &a.body)
	if n := resp.Header.Get("DPoP-Nonce"); n != "" {
		c.nonce = n
	}
	return a
}

// postForm posts an OAuth form with a DPoP proof, retrying once when the
// server asks for a nonce. proofFor may replace the proof.
func (c *client) postForm(path string, form url.Values, proofFor func() string) answer {
	c.t.Helper()
	for attempt := 0; ; attempt++ {
		if c.assert != nil && !form.Has("client_assertion") {
			form.Set("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
			form.Set("client_assertion", c.assert())
		}
		req, _ := http.NewRequest("POST", c.srv.URL()+path, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		p := c.proof("POST", path, "", nil)
		if proofFor != nil {
			p = proofFor()
		}
		if p != "" {
			req.Header.Set("DPoP", p)
		}
		a := c.do(req)
		if a.str("error") == "use_dpop_nonce" && attempt == 0 {
			if c.assert != nil {
				form.Del("client_assertion")
			}
			continue
		}
		return a
	}
}

// xrpc calls an XRPC method with the access token and a DPoP proof,
// retrying once on a nonce challenge.
func (c *client) xrpc(method, nsid, token string, body any) answer {
	c.t.Helper()
	path := "/xrpc/" + nsid
	for attempt := 0; ; attempt++ {
		var rd io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			rd = strings.NewReader(string(b))
		}
		req, _ := http.NewRequest(method, c.srv.URL()+path, rd)
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		req.Header.Set("Authorization", "DPoP "+token)
		req.Header.Set("DPoP", c.proof(method, path, token, nil))
		a := c.do(req)
		if a.str("error") == "use_dpop_nonce" && attempt == 0 {
			continue
		}
		return a
	}
}

func (c *client) par(redirect, scope string, edit func(url.Values)) answer {
	verifier := randString()
	h := sha256.Sum256([]byte(verifier))
	f := url.Values{
		"client_id": {c.id}, "response_type": {"code"}, "redirect_uri": {redirect}, "scope": {scope},
		"state": {randString()}, "code_challenge": {base64.RawURLEncoding.EncodeToString(h[:])},
		"code_challenge_method": {"S256"}, "verifier_for_test": {verifier},
	}
	if edit != nil {
		edit(f)
	}
	verifier = f.Get("verifier_for_test")
	f.Del("verifier_for_test")
	a := c.postForm("/oauth/par", f, nil)
	if a.body == nil {
		a.body = map[string]any{}
	}
	a.body["verifier"] = verifier
	a.body["state"] = f.Get("state")
	return a
}

var (
	csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)
)

// consentPage loads the consent page and returns its CSRF token and cookie.
func (c *client) consentPage(requestURI string) (answer, string, *http.Cookie) {
	c.t.Helper()
	req, _ := http.NewRequest("GET", c.srv.URL()+"/oauth/authorize?"+url.Values{"request_uri": {requestURI}, "client_id": {c.id}}.Encode(), nil)
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	a := answer{status: resp.StatusCode, header: resp.Header, raw: b}
	m := csrfField.FindSubmatch(b)
	var cookie *http.Cookie
	for _, ck := range resp.Cookies() {
		cookie = ck
	}
	if m == nil {
		return a, "", cookie
	}
	return a, string(m[1]), cookie
}

// submit posts the consent form.
func (c *client) submit(requestURI, csrf string, cookie *http.Cookie, action, identifier, password string) answer {
	c.t.Helper()
	f := url.Values{"request_uri": {requestURI}, "client_id": {c.id}, "csrf": {csrf}, "action": {action},
		"identifier": {identifier}, "password": {password}}
	req, _ := http.NewRequest("POST", c.srv.URL()+"/oauth/authorize", strings.NewReader(f.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if cookie != nil {
		req.AddCookie(cookie)
	}
	return c.do(req)
}

// authorize runs PAR and the consent page and returns the code and the
// PKCE verifier.
func (c *client) authorize(redirect, scope string) (code, verifier string) {
	c.t.Helper()
	p := c.par(redirect, scope, nil)
	if p.status != http.StatusCreated {
		c.t.Fatalf("PAR: %d %s", p.status, p.raw)
	}
	page, csrf, cookie := c.consentPage(p.str("request_uri"))
	if page.status != 200 || csrf == "" || cookie == nil {
		c.t.Fatalf("consent page: %d csrf=%q cookie=%v\n%s", page.status, csrf, cookie, page.raw)
	}
	a := c.submit(p.str("request_uri"), csrf, cookie, "approve", c.srv.Handle(), pdstest.Password)
	if a.status != http.StatusSeeOther {
		c.t.Fatalf("approve: %d %s", a.status, a.raw)
	}
	loc, err := url.Parse(a.header.Get("Location"))
	if err != nil {
		c.t.Fatal(err)
	}
	q := loc.Query()
	if q.Get("state") != p.str("state") || q.Get("iss") != c.srv.PublicURL() || q.Get("code") == "" {
		c.t.Fatalf("redirect %s: want code, state %q and iss %q", loc, p.str("state"), c.srv.PublicURL())
	}
	return q.Get("code"), p.str("verifier")
}

func (c *client) exchange(code, redirect, verifier string) answer {
	return c.postForm("/oauth/token", url.Values{"grant_type": {"authorization_code"}, "code": {code},
		"redirect_uri": {redirect}, "code_verifier": {verifier}, "client_id": {c.id}}, nil)
}

func (c *client) refresh(token string) answer {
	return c.postForm("/oauth/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {token}, "client_id": {c.id}}, nil)
}

// metadataServer serves a client metadata document at /client-metadata.json
// and returns its client_id and redirect URI; edit changes the document.
func metadataServer(t testing.TB, edit func(md map[string]any)) (clientID, redirect string) {
	var md []byte
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/client-metadata.json" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(md)
	}))
	t.Cleanup(ts.Close)
	clientID, redirect = ts.URL+"/client-metadata.json", ts.URL+"/callback"
	doc := map[string]any{
		"client_id": clientID, "client_name": "Test App", "redirect_uris": []string{redirect},
		"scope":       "atproto transition:generic transition:email repo:app.bsky.feed.post?action=create blob:image/*",
		"grant_types": []string{"authorization_code", "refresh_token"}, "response_types": []string{"code"},
		"dpop_bound_access_tokens": true, "token_endpoint_auth_method": "none", "application_type": "web",
		"logo_uri": "https://app.example.com/logo.png",
	}
	if edit != nil {
		edit(doc)
	}
	md, _ = json.Marshal(doc)
	return clientID, redirect
}
