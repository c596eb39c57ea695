package server_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	atauth "github.com/bluesky-social/indigo/atproto/auth"
	"github.com/bluesky-social/indigo/atproto/identity"
	"github.com/bluesky-social/indigo/atproto/syntax"

	"stratus/internal/config"
	stridentity "stratus/internal/identity"
	"stratus/internal/identity/plctest"
	"stratus/internal/pdstest"
	"stratus/internal/server"
)

// received is what a stand-in service got.
type received struct {
	Method, Path, Query string
	Header              http.Header
	Body                []byte
	Claims              map[string]any
	Iss                 syntax.DID
	AuthErr             error
}

// standIn is a stand-in AppView (or chat or other service): it checks each
// service JWT with indigo's validator against the account's DID document,
// records what it received and answers with handle.
type standIn struct {
	srv *httptest.Server
	did string

	mu     sync.Mutex
	got    []received
	dir    identity.Directory
	handle http.HandlerFunc
}

func newStandIn(t *testing.T, did string) *standIn {
	t.Helper()
	st := &standIn{did: did}
	st.srv = httptest.NewServer(http.HandlerFunc(st.serve))
	t.Cleanup(st.srv.Close)
	return st
}

func (st *standIn) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rec := received{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Header: r.Header.Clone(), Body: body}
	tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	if parts := strings.Split(tok, "."); len(parts) == 3 {
		if b, err := base64.RawURLEncoding.DecodeString(parts[1]); err == nil {
			json.Unmarshal(b, &rec.Claims)
		}
	}
	st.mu.Lock()
	dir, handle := st.dir, st.handle
	st.mu.Unlock()
	lxm, err := syntax.ParseNSID(strings.TrimPrefix(r.URL.Path, "/xrpc/"))
	if err == nil {
		v := atauth.ServiceAuthValidator{Audience: st.did, Dir: dir}
		rec.Iss, rec.AuthErr = v.Validate(r.Context(), tok, &lxm)
	} else {
		rec.AuthErr = err
	}
	st.mu.Lock()
	st.got = append(st.got, rec)
	st.mu.Unlock()
	if rec.AuthErr != nil {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		w.Write([]byte(`{"error":"BadJwt","message":"stand-in refused the token"}`))
		return
	}
	if handle == nil {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"ok":true}`))
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	handle(w, r)
}

func (st *standIn) setHandler(h http.HandlerFunc) {
	st.mu.Lock()
	st.handle = h
	st.mu.Unlock()
}

func (st *standIn) received() []received {
	st.mu.Lock()
	defer st.mu.Unlock()
	return append([]received(nil), st.got...)
}

func (st *standIn) last(t *testing.T) received {
	t.Helper()
	got := st.received()
	if len(got) == 0 {
		t.Fatal("the stand-in service received nothing")
	}
	return got[len(got)-1]
}

// trust makes the stand-in verify tokens against the DID document the PDS
// publishes for its account.
func (st *standIn) trust(t *testing.T, s *pdstest.Server) {
	t.Helper()
	resp, body := s.Raw(t, get, "/.well-known/did.json", nil, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("did.json: %d %s", resp.StatusCode, body)
	}
	var doc identity.DIDDocument
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatal(err)
	}
	ident := identity.ParseIdentity(&doc)
	dir := identity.NewMockDirectory()
	dir.Insert(ident)
	st.mu.Lock()
	st.dir = dir
	st.mu.Unlock()
}

const (
	appViewDID = "did:web:appview.test"
	chatDID    = "did:web:chat.test"
)

// proxied starts a PDS whose AppView and chat service are stand-ins.
func proxied(t *testing.T, opts ...pdstest.Option) (*pdstest.Server, *standIn, *standIn) {
	t.Helper()
	av, chat := newStandIn(t, appViewDID), newStandIn(t, chatDID)
	opts = append([]pdstest.Option{pdstest.WithLoopbackServices(), pdstest.WithConfig(func(c *config.Config) {
		c.AppViewDID, c.AppViewURL = appViewDID, av.srv.URL
		c.ChatDID, c.ChatURL = chatDID, chat.srv.URL
	})}, opts...)
	s := pdstest.NewServer(t, opts...)
	av.trust(t, s)
	chat.trust(t, s)
	return s, av, chat
}

func checkClaims(t *testing.T, r received, s *pdstest.Server, aud, lxm string) {
	t.Helper()
	if r.AuthErr != nil {
		t.Fatalf("service token refused by indigo's validator: %v", r.AuthErr)
	}
	if r.Iss.String() != s.DID() || r.Claims["aud"] != aud || r.Claims["lxm"] != lxm {
		t.Fatalf("claims %v, want iss %s aud %s lxm %s", r.Claims, s.DID(), aud, lxm)
	}
	exp, _ := r.Claims["exp"].(float64)
	iat, _ := r.Claims["iat"].(float64)
	if exp-iat > 60 || exp-iat <= 0 {
		t.Errorf("token lives %v s, want at most 60", exp-iat)
	}
	if jti, _ := r.Claims["jti"].(string); jti == "" {
		t.Error("token has no jti")
	}
}

// Unknown methods go to the AppView with a service token, the caller's
// query and the allow-listed headers only; the answer comes back with its
// status and allow-listed headers.
func TestProxyForwardsUnknownMethods(t *testing.T) {
	t.Parallel()
	s, av, _ := proxied(t)
	sess := s.Login(t, s.Handle(), pdstest.Password)
	av.setHandler(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Language", "de")
		w.Header().Set("Atproto-Repo-Rev", "3kabc")
		w.Header().Set("Atproto-Content-Labelers", "did:plc:labeler")
		w.Header().Set("X-Internal", "secret")
		w.WriteHeader(http.StatusAccepted)
		w.Write([]byte(`{"notifications":[]}`))
	})
	h := http.Header{
		"Authorization":           {"Bearer " + sess.AccessJWT},
		"Accept-Language":         {"de, en;q=0.5"},
		"Atproto-Accept-Labelers": {"did:plc:labeler;redact"},
		"X-Bsky-Topics":           {"dev"},
		"Cookie":                  {"session=1"},
		"X-Forwarded-For":         {"203.0.113.9"},
	}
	resp, body := s.Raw(t, get, "/xrpc/app.bsky.notification.listNotifications?limit=5&reasons=like&reasons=reply", h, nil)
	if resp.StatusCode != http.StatusAccepted || string(body) != `{"notifications":[]}` {
		t.Fatalf("got %d %s", resp.StatusCode, body)
	}
	for k, want := range map[string]string{"Content-Language": "de", "Atproto-Repo-Rev": "3kabc", "Atproto-Content-Labelers": "did:plc:labeler", "X-Internal": ""} {
		if got := resp.Header.Get(k); got != want {
			t.Errorf("response header %s = %q, want %q", k, got, want)
		}
	}
	r := av.last(t)
	checkClaims(t, r, s, appViewDID, "app.bsky.notification.listNotifications")
	if r.Query != "limit=5&reasons=like&reasons=reply" {
		t.Errorf("query %q", r.Query)
	}
	for k, want := range map[string]string{"Accept-Language": "de, en;q=0.5", "Atproto-Accept-Labelers": "did:plc:labeler;redact", "X-Bsky-Topics": "dev", "Cookie": "", "X-Forwarded-For": "", "Accept-Encoding": "gzip"} {
		if got := r.Header.Get(k); got != want {
			t.Errorf("forwarded header %s = %q, want %q", k, got, want)
		}
	}

	// A procedure's body and content type go through as sent.
	av.setHandler(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Write(b)
	})
	in := `{"interactions":[{"item":"at://did:plc:x/app.bsky.feed.post/1","event":"app.bsky.feed.defs#interactionLike"}]}`
	resp, body = s.Raw(t, post, "/xrpc/app.bsky.feed.sendInteractions", http.Header{"Authorization": {"Bearer " + sess.AccessJWT}, "Content-Type": {"application/json"}}, strings.NewReader(in))
	if resp.StatusCode != 200 || string(body) != in {
		t.Fatalf("POST: %d %s", resp.StatusCode, body)
	}
	r = av.last(t)
	if string(r.Body) != in || r.Header.Get("Content-Type") != "application/json" || r.Method != post {
		t.Errorf("stand-in got %s %q (%s)", r.Method, r.Body, r.Header.Get("Content-Type"))
	}
	checkClaims(t, r, s, appViewDID, "app.bsky.feed.sendInteractions")

	// The operator acts as the account; age assurance is the AppView's, as
	// in the reference implementation.
	status, _ := s.Do(t, get, "app.bsky.ageassurance.getState", nil, nil, s.AdminToken())
	if status != 200 {
		t.Fatalf("ageassurance via admin: %d", status)
	}
	checkClaims(t, av.last(t), s, appViewDID, "app.bsky.ageassurance.getState")

	// Without credentials nothing is forwarded.
	n := len(av.received())
	status, body = s.Do(t, get, "app.bsky.notification.listNotifications", nil, nil, "")
	pdstest.MustError(t, status, body, http.StatusUnauthorized, "AuthMissing")
	// Protected methods are never forwarded.
	status, body = s.Do(t, post, "com.atproto.server.requestEmailUpdate", nil, map[string]any{}, sess.AccessJWT)
	pdstest.MustError(t, status, body, http.StatusUnauthorized, "InvalidToken")
	if len(av.received()) != n {
		t.Error("a refused request reached the AppView")
	}
}

// Upstream errors keep their status and XRPC error; a 500 becomes 502
// UpstreamFailure; an upstream that does not answer in time is 504.
func TestProxyUpstreamErrors(t *testing.T) {
	t.Parallel()
	s, av, _ := proxied(t, pdstest.WithServerOptions(func(o *server.Options) { o.ProxyTimeout = 500 * time.Millisecond }))
	sess := s.Login(t, s.Handle(), pdstest.Password)
	cases := []struct {
		name, ctype, body string
		status            int
		wantStatus        int
		wantName, wantMsg string
	}{
		{"named 400", "application/json", `{"error":"NotFound","message":"Profile not found"}`, 400, 400, "NotFound", "Profile not found"},
		{"rate limited", "application/json", `{"error":"RateLimitExceeded"}`, 429, 429, "RateLimitExceeded", ""},
		{"500", "application/json", `{"error":"InternalServerError","message":"boom"}`, 500, 502, "UpstreamFailure", "boom"},
		{"html 502", "text/html", `<h1>bad gateway</h1>`, 502, 502, "UpstreamFailure", ""},
	}
	for _, c := range cases {
		av.setHandler(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", c.ctype)
			w.Header().Set("Retry-After", "30")
			w.WriteHeader(c.status)
			w.Write([]byte(c.body))
		})
		resp, body := s.Raw(t, get, "/xrpc/app.bsky.graph.getLists?actor=x", http.Header{"Authorization": {"Bearer " + sess.AccessJWT}}, nil)
		env := pdstest.MustError(t, resp.StatusCode, body, c.wantStatus, c.wantName)
		if env.Message != c.wantMsg || resp.Header.Get("Retry-After") != "30" {
			t.Errorf("%s: message %q retry-after %q", c.name, env.Message, resp.Header.Get("Retry-After"))
		}
	}
	av.setHandler(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	})
	status, body := s.Do(t, get, "app.bsky.graph.getLists", nil, nil, sess.AccessJWT)
	pdstest.MustError(t, status, body, http.StatusGatewayTimeout, "UpstreamTimeout")
}

// A large answer streams through: the caller reads its first part while
// the upstream is still holding back the rest. Past the size limit the
// answer is refused (declared length) or cut (streamed).
func TestProxyStreamsLargeResponses(t *testing.T) {
	t.Parallel()
	s, av, _ := proxied(t, pdstest.WithServerOptions(func(o *server.Options) { o.ProxyMaxResponse = 8 << 20 }))
	sess := s.Login(t, s.Handle(), pdstest.Password)
	first := bytes.Repeat([]byte("a"), 1<<20)
	rest := bytes.Repeat([]byte("b"), 5<<20)
	release := make(chan struct{})
	av.setHandler(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(first)
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-time.After(20 * time.Second):
			return
		}
		w.Write(rest)
	})
	req, _ := http.NewRequest(get, s.URL()+"/xrpc/com.example.big.download", nil)
	req.Header.Set("Authorization", "Bearer "+sess.AccessJWT)
	resp, err := s.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	head := make([]byte, len(first))
	if _, err := io.ReadFull(resp.Body, head); err != nil {
		t.Fatalf("first part did not arrive before the upstream finished: %v", err)
	}
	close(release)
	tail, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	got := sha256.Sum256(append(head, tail...))
	if want := sha256.Sum256(append(append([]byte{}, first...), rest...)); got != want {
		t.Fatalf("body differs: %d bytes", len(head)+len(tail))
	}

	// Over the limit with a declared length: refused before anything is sent.
	big := bytes.Repeat([]byte("c"), 9<<20)
	av.setHandler(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "9437184")
		w.Write(big)
	})
	status, body := s.Do(t, get, "com.example.big.download", nil, nil, sess.AccessJWT)
	pdstest.MustError(t, status, body, http.StatusBadGateway, "UpstreamFailure")
	// Streamed over the limit: the connection is cut.
	av.setHandler(func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i < 9; i++ {
			w.Write(big[:1<<20])
			w.(http.Flusher).Flush()
		}
	})
	req, _ = http.NewRequest(get, s.URL()+"/xrpc/com.example.big.download", nil)
	req.Header.Set("Authorization", "Bearer "+sess.AccessJWT)
	if resp, err = s.Client().Do(req); err == nil {
		n, rerr := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if rerr == nil || n > 8<<20 {
			t.Fatalf("read %d bytes without error past the limit", n)
		}
	}
}

// By default the proxy refuses loopback and private addresses, so a
// misconfigured or hostile service cannot point it at the server's own
// network.
func TestProxySSRFGuard(t *testing.T) {
	t.Parallel()
	av := newStandIn(t, appViewDID)
	tlsAV := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { t.Error("a loopback service was reached") }))
	defer tlsAV.Close()
	for _, u := range []string{av.srv.URL, tlsAV.URL, strings.Replace(tlsAV.URL, "127.0.0.1", "localhost", 1)} {
		s := pdstest.NewServer(t, pdstest.WithConfig(func(c *config.Config) { c.AppViewDID, c.AppViewURL = appViewDID, u }))
		sess := s.Login(t, s.Handle(), pdstest.Password)
		status, body := s.Do(t, get, "app.bsky.feed.getFeed", nil, nil, sess.AccessJWT)
		pdstest.MustError(t, status, body, http.StatusBadGateway, "UpstreamFailure")
	}
	if len(av.received()) != 0 {
		t.Error("the guard let a request through to loopback")
	}
}

// chat.bsky.* goes to the chat service by default; plain app passwords
// may not use it; atproto-proxy names any service through its DID
// document.
func TestProxyRouting(t *testing.T) {
	t.Parallel()
	plc := plctest.NewServer(t)
	other := newStandIn(t, "")
	// A service whose DID document (at the stand-in PLC directory) names
	// the stand-in as its #my_feedgen endpoint.
	rot, _ := atcrypto.GeneratePrivateKeyK256()
	sk, _ := atcrypto.GeneratePrivateKeyK256()
	spub, _ := sk.PublicKey()
	op, err := stridentity.NewGenesis(rot, nil, spub, "svc.test", "https://svc.test")
	if err != nil {
		t.Fatal(err)
	}
	op.Services["my_feedgen"] = stridentity.OpService{Type: "BskyFeedGenerator", Endpoint: other.srv.URL}
	if err := op.Sign(rot); err != nil {
		t.Fatal(err)
	}
	svcDID, err := plc.Register(op)
	if err != nil {
		t.Fatal(err)
	}
	other.did = svcDID.String()

	s, av, chat := proxied(t, pdstest.WithConfig(func(c *config.Config) { c.PLCURL = plc.URL() }))
	other.trust(t, s)
	sess := s.Login(t, s.Handle(), pdstest.Password)
	status, body := s.Do(t, get, "chat.bsky.convo.listConvos", nil, nil, sess.AccessJWT)
	if status != 200 {
		t.Fatalf("chat: %d %s", status, body)
	}
	checkClaims(t, chat.last(t), s, chatDID, "chat.bsky.convo.listConvos")

	var plain struct {
		Password string `json:"password"`
	}
	s.Call(t, post, "com.atproto.server.createAppPassword", nil, map[string]any{"name": "plain"}, s.AdminToken(), &plain)
	plainSess := s.Login(t, s.Handle(), plain.Password)
	n := len(chat.received())
	status, body = s.Do(t, get, "chat.bsky.convo.listConvos", nil, nil, plainSess.AccessJWT)
	pdstest.MustError(t, status, body, http.StatusUnauthorized, "InvalidToken")
	if len(chat.received()) != n {
		t.Error("a plain app password reached the chat service")
	}

	h := func(proxyTo string) http.Header {
		return http.Header{"Authorization": {"Bearer " + sess.AccessJWT}, "Atproto-Proxy": {proxyTo}}
	}
	resp, body := s.Raw(t, get, "/xrpc/app.bsky.feed.getFeedSkeleton?feed=x", h(svcDID.String()+"#my_feedgen"), nil)
	if resp.StatusCode != 200 {
		t.Fatalf("atproto-proxy: %d %s", resp.StatusCode, body)
	}
	checkClaims(t, other.last(t), s, svcDID.String(), "app.bsky.feed.getFeedSkeleton")
	// The configured AppView is known without a lookup.
	resp, _ = s.Raw(t, get, "/xrpc/app.bsky.feed.getFeed?feed=x", h(appViewDID+"#bsky_appview"), nil)
	if resp.StatusCode != 200 {
		t.Fatalf("atproto-proxy to the AppView: %d", resp.StatusCode)
	}
	checkClaims(t, av.last(t), s, appViewDID, "app.bsky.feed.getFeed")
	for _, bad := range []string{svcDID.String(), "#my_feedgen", svcDID.String() + "#", svcDID.String() + "#a#b", svcDID.String() + "#missing", "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa#x", "not a did#x"} {
		resp, body := s.Raw(t, get, "/xrpc/app.bsky.feed.getFeed", h(bad), nil)
		pdstest.MustError(t, resp.StatusCode, body, http.StatusBadRequest, "InvalidRequest")
	}
}

// getServiceAuth mints tokens another service accepts, within the limits
// of the caller's session.
func TestGetServiceAuth(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t)
	full := s.Login(t, s.Handle(), pdstest.Password)
	var plain struct {
		Password string `json:"password"`
	}
	s.Call(t, post, "com.atproto.server.createAppPassword", nil, map[string]any{"name": "plain"}, s.AdminToken(), &plain)
	app := s.Login(t, s.Handle(), plain.Password)
	dir := identity.NewMockDirectory()
	dir.Insert(identity.Identity{DID: syntax.DID(s.DID()), Keys: map[string]identity.VerificationMethod{"atproto": {Type: "Multikey", PublicKeyMultibase: s.SigningKey().Multibase()}}})
	q := func(kv ...string) map[string][]string {
		m := map[string][]string{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = []string{kv[i+1]}
		}
		return m
	}
	var out struct {
		Token string `json:"token"`
	}
	exp := time.Now().Add(30 * time.Minute).Unix()
	s.Call(t, get, "com.atproto.server.getServiceAuth", q("aud", "did:web:video.test", "lxm", "com.atproto.repo.uploadBlob", "exp", jsonInt(exp)), nil, app.AccessJWT, &out)
	lxm := syntax.NSID("com.atproto.repo.uploadBlob")
	v := atauth.ServiceAuthValidator{Audience: "did:web:video.test", Dir: dir}
	if iss, err := v.Validate(context.Background(), out.Token, &lxm); err != nil || iss.String() != s.DID() {
		t.Fatalf("minted token: %v %s", err, iss)
	}
	s.Call(t, get, "com.atproto.server.getServiceAuth", q("aud", "did:web:video.test#svc"), nil, full.AccessJWT, &out)
	for _, c := range []struct {
		tok    string
		query  map[string][]string
		status int
		name   string
	}{
		{app.AccessJWT, q("aud", "did:web:video.test"), 401, "InvalidToken"},
		{full.AccessJWT, q("aud", "did:web:video.test", "exp", jsonInt(time.Now().Add(2*time.Minute).Unix())), 400, "BadExpiration"},
		{full.AccessJWT, q("aud", "did:web:video.test", "lxm", "a.b.c", "exp", jsonInt(time.Now().Add(2*time.Hour).Unix())), 400, "BadExpiration"},
		{full.AccessJWT, q("aud", "did:web:video.test", "lxm", "a.b.c", "exp", jsonInt(time.Now().Add(-time.Minute).Unix())), 400, "BadExpiration"},
		{full.AccessJWT, q("aud", "did:web:video.test", "lxm", "com.atproto.identity.signPlcOperation"), 400, "InvalidRequest"},
		{app.AccessJWT, q("aud", "did:web:chat.test", "lxm", "chat.bsky.convo.sendMessage"), 400, "InvalidRequest"},
		{app.AccessJWT, q("aud", "did:web:x.test", "lxm", "com.atproto.server.createaccount"), 400, "InvalidRequest"},
		{full.AccessJWT, q("aud", "https://video.test"), 400, "InvalidRequest"},
		{"", q("aud", "did:web:video.test"), 401, "AuthMissing"},
	} {
		status, body := s.Do(t, get, "com.atproto.server.getServiceAuth", c.query, nil, c.tok)
		pdstest.MustError(t, status, body, c.status, c.name)
	}
}

func jsonInt(n int64) string { b, _ := json.Marshal(n); return string(b) }
