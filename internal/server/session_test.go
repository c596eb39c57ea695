package server_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/identity"
	atrepo "github.com/bluesky-social/indigo/atproto/repo"
	"github.com/golang-jwt/jwt/v5"

	"stratus/internal/auth"
	"stratus/internal/config"
	"stratus/internal/pdstest"
)

// Session, app-password and operator methods.
const (
	sessCreate    = "com.atproto.server.createSession"
	sessRefresh   = "com.atproto.server.refreshSession"
	sessGet       = "com.atproto.server.getSession"
	sessDelete    = "com.atproto.server.deleteSession"
	apCreate      = "com.atproto.server.createAppPassword"
	apList        = "com.atproto.server.listAppPasswords"
	apRevoke      = "com.atproto.server.revokeAppPassword"
	opRotateJWT   = "app.stratus.admin.rotateJwtSecret"
	opSetPassword = "app.stratus.admin.setPassword"
	opRotateAdmin = "app.stratus.admin.rotateAdminToken"
	opRotateKey   = "app.stratus.admin.rotateSigningKey"
)

// appPasswordRE is the xxxx-xxxx-xxxx-xxxx form of generated passwords.
var appPasswordRE = regexp.MustCompile(`^[a-z2-7]{4}(-[a-z2-7]{4}){3}$`)

// sessLogin is pdstest's Login, kept short.
func sessLogin(t *testing.T, s *pdstest.Server, password string) pdstest.Session {
	t.Helper()
	return s.Login(t, s.Handle(), password)
}

// loginErr tries createSession and returns the answer.
func loginErr(t *testing.T, s *pdstest.Server, identifier, password string) (int, []byte) {
	t.Helper()
	return s.Do(t, post, sessCreate, nil, obj{"identifier": identifier, "password": password}, "")
}

// refresh calls refreshSession with a refresh token and fails unless it
// succeeds.
func refresh(t *testing.T, s *pdstest.Server, refreshJWT string) pdstest.Session {
	t.Helper()
	var out pdstest.Session
	s.Call(t, post, sessRefresh, nil, nil, refreshJWT, &out)
	if out.AccessJWT == "" || out.RefreshJWT == "" {
		t.Fatalf("refreshSession answered without tokens")
	}
	return out
}

// mustFail asserts that calling nsid with tok fails with status and name.
func mustFail(t *testing.T, s *pdstest.Server, method, nsid string, body any, tok string, status int, name string) pdstest.ErrorEnvelope {
	t.Helper()
	st, b := s.Do(t, method, nsid, nil, body, tok)
	return pdstest.MustError(t, st, b, status, name)
}

// getSessionOK asserts that an access token works for getSession.
func getSessionOK(t *testing.T, s *pdstest.Server, tok string) {
	t.Helper()
	var out pdstest.Session
	s.Call(t, get, sessGet, nil, nil, tok, &out)
	if out.DID != s.DID() {
		t.Fatalf("getSession did %q, want %q", out.DID, s.DID())
	}
}

// jwtParts decodes a JWT's header and claims without verifying it.
func jwtParts(t *testing.T, tok string) (header, claims map[string]any) {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token %q has %d parts", tok, len(parts))
	}
	for i, dst := range []*map[string]any{&header, &claims} {
		b, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			t.Fatalf("decode JWT part %d: %v", i, err)
		}
		if err := json.Unmarshal(b, dst); err != nil {
			t.Fatalf("JWT part %d is not JSON: %v: %s", i, err, b)
		}
	}
	return header, claims
}

func claimNum(t *testing.T, c map[string]any, name string) int64 {
	t.Helper()
	v, ok := c[name].(float64)
	if !ok {
		t.Fatalf("claim %s = %#v, want a number", name, c[name])
	}
	return int64(v)
}

func claimStr(t *testing.T, c map[string]any, name string) string {
	t.Helper()
	v, ok := c[name].(string)
	if !ok {
		t.Fatalf("claim %s = %#v, want a string", name, c[name])
	}
	return v
}

func scopeOf(t *testing.T, tok string) string {
	t.Helper()
	_, c := jwtParts(t, tok)
	return claimStr(t, c, "scope")
}

func jtiOf(t *testing.T, tok string) string {
	t.Helper()
	_, c := jwtParts(t, tok)
	return claimStr(t, c, "jti")
}

// forge signs an HS256 token with secret, typ header and claims.
func forge(t *testing.T, secret, typ string, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, claims)
	tok.Header["typ"] = typ
	s, err := tok.SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// checkSessionAnswer checks the common fields of a createSession,
// refreshSession or getSession answer.
func checkSessionAnswer(t *testing.T, s *pdstest.Server, b []byte, wantActive bool, wantStatus string) {
	t.Helper()
	var raw map[string]json.RawMessage
	decode(t, b, &raw)
	var out pdstest.Session
	decode(t, b, &out)
	if out.DID != s.DID() || out.Handle != s.Handle() {
		t.Errorf("session did %q handle %q, want %q %q", out.DID, out.Handle, s.DID(), s.Handle())
	}
	if out.Email != "alice@"+s.Hostname() {
		t.Errorf("email %q", out.Email)
	}
	if _, ok := raw["emailConfirmed"]; !ok || out.EmailConfirmed {
		t.Errorf("emailConfirmed %s, want false", raw["emailConfirmed"])
	}
	if out.Active != wantActive {
		t.Errorf("active %v, want %v", out.Active, wantActive)
	}
	if st, ok := raw["status"]; wantStatus == "" && ok {
		t.Errorf("status %s present on an active account", st)
	}
	if out.Status != wantStatus {
		t.Errorf("status %q, want %q", out.Status, wantStatus)
	}
	var doc identity.DIDDocument
	if err := json.Unmarshal(out.DIDDoc, &doc); err != nil || doc.DID.String() != s.DID() {
		t.Fatalf("didDoc %s (%v)", out.DIDDoc, err)
	}
	var key, svc bool
	for _, vm := range doc.VerificationMethod {
		if vm.ID == s.DID()+"#atproto" {
			key = true
		}
	}
	for _, sv := range doc.Service {
		if sv.ID == "#atproto_pds" && sv.ServiceEndpoint == s.PublicURL() {
			svc = true
		}
	}
	if !key || !svc {
		t.Errorf("didDoc lacks the #atproto key (%v) or the #atproto_pds service (%v): %s", key, svc, out.DIDDoc)
	}
	ident := identity.ParseIdentity(&doc)
	pub, err := ident.PublicKey()
	if err != nil {
		t.Fatalf("didDoc key: %v", err)
	}
	want, _ := didDocKey(t, s)
	if pub.DIDKey() != want.DIDKey() {
		t.Errorf("didDoc key %s, want the published %s", pub.DIDKey(), want.DIDKey())
	}
}

func TestCreateSession(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t)

	for _, id := range []string{s.Handle(), s.DID(), "ALICE.test", "Alice.Test", "@alice.test", "@ALICE.TEST", "@" + s.DID(), " alice.test "} {
		t.Run("identifier "+id, func(t *testing.T) {
			st, b := loginErr(t, s, id, pdstest.Password)
			if st != http.StatusOK {
				t.Fatalf("createSession(%q): %d %s", id, st, b)
			}
			checkSessionAnswer(t, s, b, true, "")
			var out pdstest.Session
			decode(t, b, &out)
			if out.AccessJWT == "" || out.RefreshJWT == "" || out.AccessJWT == out.RefreshJWT {
				t.Errorf("tokens %q %q", out.AccessJWT, out.RefreshJWT)
			}
			st, b = s.Do(t, get, sessGet, nil, nil, out.AccessJWT)
			if st != http.StatusOK {
				t.Fatalf("getSession: %d %s", st, b)
			}
			checkSessionAnswer(t, s, b, true, "")
			var gs map[string]any
			decode(t, b, &gs)
			if _, ok := gs["accessJwt"]; ok {
				t.Errorf("getSession returns tokens")
			}
		})
	}

	t.Run("bad credentials", func(t *testing.T) {
		var msg string
		for _, c := range []struct{ id, pw string }{
			{"bob.test", pdstest.Password},
			{"did:web:nobody.test", pdstest.Password},
			{"did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", pdstest.Password},
			{"not a handle!", pdstest.Password},
			{s.Handle(), "wrong-password"},
			{s.DID(), "wrong-password"},
			{s.Handle(), pdstest.Password + " "},
			{s.Handle(), strings.ToUpper(pdstest.Password)},
			{s.Handle(), "abcd-efgh-ijkl-mnop"}, // app-password shaped
		} {
			st, b := loginErr(t, s, c.id, c.pw)
			env := pdstest.MustError(t, st, b, http.StatusUnauthorized, "AuthenticationRequired")
			if msg == "" {
				msg = env.Message
			}
			if env.Message != msg {
				t.Errorf("%q/%q: message %q, want the same %q for every failure", c.id, c.pw, env.Message, msg)
			}
		}
	})

	t.Run("missing fields", func(t *testing.T) {
		for _, body := range []any{
			obj{},
			obj{"identifier": s.Handle()},
			obj{"password": pdstest.Password},
			obj{"identifier": "", "password": ""},
			obj{"identifier": "   ", "password": pdstest.Password},
			obj{"identifier": s.Handle(), "password": ""},
			raw(`{"identifier": 1, "password": "x"}`),
			raw(`not json`),
		} {
			st, b := s.Do(t, post, sessCreate, nil, body, "")
			pdstest.MustError(t, st, b, http.StatusBadRequest, "InvalidRequest")
		}
		st, b := s.Do(t, post, sessCreate, nil, nil, "")
		pdstest.MustError(t, st, b, http.StatusBadRequest, "")
	})

	t.Run("deactivated", func(t *testing.T) {
		sess := sessLogin(t, s, pdstest.Password)
		s.Call(t, post, deactivateAccount, nil, obj{}, sess.AccessJWT, nil)
		st, b := loginErr(t, s, s.Handle(), pdstest.Password)
		if st != http.StatusOK {
			t.Fatalf("createSession while deactivated: %d %s", st, b)
		}
		checkSessionAnswer(t, s, b, false, "deactivated")
		var out pdstest.Session
		decode(t, b, &out)
		st, b = s.Do(t, get, sessGet, nil, nil, out.AccessJWT)
		if st != http.StatusOK {
			t.Fatalf("getSession while deactivated: %d %s", st, b)
		}
		checkSessionAnswer(t, s, b, false, "deactivated")
		// A refreshed session reports the status too.
		st, b = s.Do(t, post, sessRefresh, nil, nil, out.RefreshJWT)
		if st != http.StatusOK {
			t.Fatalf("refreshSession while deactivated: %d %s", st, b)
		}
		checkSessionAnswer(t, s, b, false, "deactivated")
		s.Call(t, post, activateAccount, nil, obj{}, out.AccessJWT, nil)
		st, b = loginErr(t, s, s.Handle(), pdstest.Password)
		if st != http.StatusOK {
			t.Fatalf("createSession after activation: %d %s", st, b)
		}
		checkSessionAnswer(t, s, b, true, "")
	})
}

// TestCreateSessionTiming checks that an unknown identifier and a wrong
// password take about as long: both cost one bcrypt comparison. The account
// password is hashed at bcrypt's default cost, as `pds init` and setPassword
// do (pdstest's own hash uses the minimum cost, which would make a wrong
// password ~60x faster than the dummy comparison of an unknown identifier).
func TestCreateSessionTiming(t *testing.T) {
	h, err := auth.HashPassword(pdstest.Password)
	if err != nil {
		t.Fatal(err)
	}
	s := pdstest.NewServer(t, pdstest.WithConfig(func(c *config.Config) { c.PasswordHash = h }))
	measure := func(id, pw string) time.Duration {
		start := time.Now()
		st, b := loginErr(t, s, id, pw)
		d := time.Since(start)
		pdstest.MustError(t, st, b, http.StatusUnauthorized, "AuthenticationRequired")
		return d
	}
	// Warm up connections and caches.
	measure("nobody.test", "wrong-password")
	measure(s.Handle(), "wrong-password")
	var unknown, wrong []time.Duration
	for range 3 {
		unknown = append(unknown, measure("nobody.test", "wrong-password"))
		wrong = append(wrong, measure(s.Handle(), "wrong-password"))
	}
	median := func(d []time.Duration) time.Duration {
		d = slices.Clone(d)
		slices.Sort(d)
		return d[len(d)/2]
	}
	mu, mw := median(unknown), median(wrong)
	ratio := float64(mu) / float64(mw)
	t.Logf("unknown identifier %v (median %v), wrong password %v (median %v), ratio %.2f", unknown, mu, wrong, mw, ratio)
	if ratio < 0.3 || ratio > 3 {
		t.Errorf("unknown identifier takes %.2fx as long as a wrong password; want 0.3x-3x", ratio)
	}
}

func TestSessionTokens(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t)
	sess := sessLogin(t, s, pdstest.Password)
	secret := s.Config().JWTSecret
	aud := "did:web:" + s.Hostname()

	t.Run("claims", func(t *testing.T) {
		h, c := jwtParts(t, sess.AccessJWT)
		if h["alg"] != "HS256" || h["typ"] != "at+jwt" {
			t.Errorf("access header %v", h)
		}
		if c["scope"] != auth.ScopeAccess || c["sub"] != s.DID() {
			t.Errorf("access claims %v", c)
		}
		if a, ok := c["aud"].(string); !ok || a != aud {
			t.Errorf("access aud %#v, want the string %q", c["aud"], aud)
		}
		iat, exp := claimNum(t, c, "iat"), claimNum(t, c, "exp")
		if exp-iat != 7200 {
			t.Errorf("access exp-iat = %d, want 7200", exp-iat)
		}
		if now := time.Now().Unix(); iat < now-60 || iat > now+1 {
			t.Errorf("access iat %d, now %d", iat, now)
		}

		h, c = jwtParts(t, sess.RefreshJWT)
		if h["alg"] != "HS256" || h["typ"] != "refresh+jwt" {
			t.Errorf("refresh header %v", h)
		}
		if c["scope"] != auth.ScopeRefresh || c["sub"] != s.DID() {
			t.Errorf("refresh claims %v", c)
		}
		if a, ok := c["aud"].(string); !ok || a != aud {
			t.Errorf("refresh aud %#v, want the string %q", c["aud"], aud)
		}
		if jti, _ := c["jti"].(string); jti == "" {
			t.Errorf("refresh token has no jti: %v", c)
		}
		iat, exp = claimNum(t, c, "iat"), claimNum(t, c, "exp")
		const days90 = 90 * 24 * 3600
		switch exp - iat {
		case days90:
		case days90 - 1:
			// exp and iat are computed from two readings of the clock
			// (auth.Sessions.start, then Tokens.issueRefresh) around a
			// database write; see TestRefreshTokenLifetimeExact.
			t.Logf("refresh exp-iat = 90 days - 1s: the clock crossed a second between its two readings")
		default:
			t.Errorf("refresh exp-iat = %d, want %d (90 days)", exp-iat, days90)
		}
	})

	t.Run("access token works", func(t *testing.T) {
		getSessionOK(t, s, sess.AccessJWT)
		var w writeOut
		s.Call(t, post, createRecord, nil, obj{"repo": s.DID(), "collection": postColl, "record": pdstest.Post("with a session")}, sess.AccessJWT, &w)
		if w.Commit == nil || w.URI == "" {
			t.Errorf("createRecord answer %+v", w)
		}
		s.Call(t, get, apList, nil, nil, sess.AccessJWT, nil)
	})

	t.Run("wrong kind of token", func(t *testing.T) {
		mustFail(t, s, get, sessGet, nil, sess.RefreshJWT, http.StatusUnauthorized, "InvalidToken")
		mustFail(t, s, post, createRecord, obj{"repo": s.DID(), "collection": postColl, "record": pdstest.Post("x")}, sess.RefreshJWT, http.StatusUnauthorized, "InvalidToken")
		mustFail(t, s, post, sessRefresh, nil, sess.AccessJWT, http.StatusUnauthorized, "InvalidToken")
		mustFail(t, s, post, sessDelete, nil, sess.AccessJWT, http.StatusUnauthorized, "InvalidToken")
		mustFail(t, s, post, sessRefresh, nil, s.AdminToken(), http.StatusUnauthorized, "InvalidToken")
		getSessionOK(t, s, sess.AccessJWT)
	})

	t.Run("tampered", func(t *testing.T) {
		parts := strings.Split(sess.AccessJWT, ".")
		// Change a character in the middle of the signature: the last one
		// carries padding bits that a lenient decoder may ignore.
		sig := []byte(parts[2])
		i := len(sig) / 2
		if sig[i] == 'A' {
			sig[i] = 'B'
		} else {
			sig[i] = 'A'
		}
		bad := parts[0] + "." + parts[1] + "." + string(sig)
		mustFail(t, s, get, sessGet, nil, bad, http.StatusUnauthorized, "InvalidToken")
		// Claims changed, signature kept.
		_, c := jwtParts(t, sess.AccessJWT)
		c["sub"] = "did:web:mallory.test"
		cb, _ := json.Marshal(c)
		bad = parts[0] + "." + base64.RawURLEncoding.EncodeToString(cb) + "." + parts[2]
		mustFail(t, s, get, sessGet, nil, bad, http.StatusUnauthorized, "InvalidToken")
		// Signed with another secret.
		now := time.Now()
		other := forge(t, "not-the-secret", "at+jwt", jwt.MapClaims{"sub": s.DID(), "aud": aud, "scope": auth.ScopeAccess, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()})
		mustFail(t, s, get, sessGet, nil, other, http.StatusUnauthorized, "InvalidToken")
		// alg none.
		none := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"sub": s.DID(), "aud": aud, "scope": auth.ScopeAccess, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()})
		none.Header["typ"] = "at+jwt"
		ns, err := none.SignedString(jwt.UnsafeAllowNoneSignatureType)
		if err != nil {
			t.Fatal(err)
		}
		mustFail(t, s, get, sessGet, nil, ns, http.StatusUnauthorized, "InvalidToken")
		mustFail(t, s, get, sessGet, nil, "a.b.c", http.StatusUnauthorized, "InvalidToken")
		mustFail(t, s, get, sessGet, nil, "garbage", http.StatusUnauthorized, "InvalidToken")
	})

	t.Run("forged with the server's secret", func(t *testing.T) {
		now := time.Now()
		valid := jwt.MapClaims{"sub": s.DID(), "aud": aud, "scope": auth.ScopeAccess, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
		// The forging itself is right: this one is accepted.
		getSessionOK(t, s, forge(t, secret, "at+jwt", valid))

		with := func(k string, v any) jwt.MapClaims {
			c := jwt.MapClaims{}
			for kk, vv := range valid {
				c[kk] = vv
			}
			if v == nil {
				delete(c, k)
			} else {
				c[k] = v
			}
			return c
		}
		for name, tok := range map[string]string{
			"other audience":   forge(t, secret, "at+jwt", with("aud", "did:web:other")),
			"no audience":      forge(t, secret, "at+jwt", with("aud", nil)),
			"no expiry":        forge(t, secret, "at+jwt", with("exp", nil)),
			"no subject":       forge(t, secret, "at+jwt", with("sub", nil)),
			"refresh typ":      forge(t, secret, "refresh+jwt", valid),
			"no typ":           forge(t, secret, "", valid),
			"refresh scope":    forge(t, secret, "at+jwt", with("scope", auth.ScopeRefresh)),
			"unknown scope":    forge(t, secret, "at+jwt", with("scope", "com.atproto.everything")),
			"audience as list": forge(t, secret, "at+jwt", with("aud", []string{"did:web:other", aud})),
		} {
			st, b := s.Do(t, get, sessGet, nil, nil, tok)
			env := pdstest.MustError(t, st, b, http.StatusUnauthorized, "InvalidToken")
			t.Logf("%s: %s", name, env.Message)
		}
		env := mustFail(t, s, get, sessGet, nil, forge(t, secret, "at+jwt", with("scope", auth.ScopeRefresh)), http.StatusUnauthorized, "InvalidToken")
		if !strings.Contains(env.Message, "Bad token scope") {
			t.Errorf("refresh-scoped access token: message %q", env.Message)
		}

		expired := forge(t, secret, "at+jwt", jwt.MapClaims{"sub": s.DID(), "aud": aud, "scope": auth.ScopeAccess, "iat": now.Add(-3 * time.Hour).Unix(), "exp": now.Add(-time.Hour).Unix()})
		mustFail(t, s, get, sessGet, nil, expired, http.StatusBadRequest, "ExpiredToken")
		mustFail(t, s, post, createRecord, obj{"repo": s.DID(), "collection": postColl, "record": pdstest.Post("x")}, expired, http.StatusBadRequest, "ExpiredToken")
	})

	t.Run("no credentials", func(t *testing.T) {
		for _, nsid := range []string{sessGet, apList} {
			mustFail(t, s, get, nsid, nil, "", http.StatusUnauthorized, "AuthMissing")
		}
		for _, nsid := range []string{sessRefresh, sessDelete, createRecord} {
			mustFail(t, s, post, nsid, obj{}, "", http.StatusUnauthorized, "AuthMissing")
		}
	})
}

func TestRefreshSession(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t)
	first := sessLogin(t, s, pdstest.Password)
	other := sessLogin(t, s, pdstest.Password)

	second := refresh(t, s, first.RefreshJWT)
	if second.RefreshJWT == first.RefreshJWT {
		t.Fatalf("refresh did not rotate the refresh token")
	}
	if second.AccessJWT == first.AccessJWT {
		// Access tokens carry no jti: two of one session issued within
		// the same second are byte-identical (as in the reference PDS).
		// Harmless, but worth knowing.
		_, a1 := jwtParts(t, first.AccessJWT)
		_, a2 := jwtParts(t, second.AccessJWT)
		if a1["iat"] != a2["iat"] {
			t.Fatalf("identical access tokens with different iat")
		}
		t.Logf("refreshed access token is identical to the first (same session, same second)")
	}
	if jtiOf(t, second.RefreshJWT) == jtiOf(t, first.RefreshJWT) {
		t.Fatalf("rotated refresh token has the same jti")
	}
	if second.DID != s.DID() || second.Handle != s.Handle() || !second.Active {
		t.Errorf("refresh answer %+v", second)
	}
	_, c1 := jwtParts(t, first.AccessJWT)
	_, c2 := jwtParts(t, second.AccessJWT)
	if c1["sid"] != c2["sid"] || c2["scope"] != auth.ScopeAccess {
		t.Errorf("refreshed access token claims %v, first %v", c2, c1)
	}

	// A client that lost the answer presents the old token again: it gets
	// the same successor, not a new one and not an error.
	retry := refresh(t, s, first.RefreshJWT)
	if jtiOf(t, retry.RefreshJWT) != jtiOf(t, second.RefreshJWT) {
		t.Fatalf("retried refresh returned jti %s, want the successor %s", jtiOf(t, retry.RefreshJWT), jtiOf(t, second.RefreshJWT))
	}
	getSessionOK(t, s, retry.AccessJWT)
	getSessionOK(t, s, second.AccessJWT)
	// The old access token keeps working until it expires or the session
	// ends.
	getSessionOK(t, s, first.AccessJWT)

	third := refresh(t, s, second.RefreshJWT)
	if j := jtiOf(t, third.RefreshJWT); j == jtiOf(t, second.RefreshJWT) || j == jtiOf(t, first.RefreshJWT) {
		t.Fatalf("third refresh token reuses a jti")
	}
	getSessionOK(t, s, third.AccessJWT)

	// Logout ends the whole session at once.
	s.Call(t, post, sessDelete, nil, nil, third.RefreshJWT, nil)
	mustFail(t, s, post, sessRefresh, nil, third.RefreshJWT, http.StatusBadRequest, "ExpiredToken")
	mustFail(t, s, post, sessRefresh, nil, second.RefreshJWT, http.StatusBadRequest, "ExpiredToken")
	mustFail(t, s, post, sessRefresh, nil, first.RefreshJWT, http.StatusBadRequest, "ExpiredToken")
	for i, tok := range []string{first.AccessJWT, second.AccessJWT, retry.AccessJWT, third.AccessJWT} {
		st, b := s.Do(t, get, sessGet, nil, nil, tok)
		env := pdstest.MustError(t, st, b, http.StatusUnauthorized, "InvalidToken")
		if i == 0 {
			t.Logf("access token of an ended session: %q", env.Message)
		}
	}
	mustFail(t, s, post, createRecord, obj{"repo": s.DID(), "collection": postColl, "record": pdstest.Post("x")}, third.AccessJWT, http.StatusUnauthorized, "InvalidToken")
	// Logging out twice is harmless.
	if st, b := s.Do(t, post, sessDelete, nil, nil, third.RefreshJWT); st != http.StatusOK {
		t.Logf("second deleteSession: %d %s", st, b)
	}

	// Another session is untouched.
	getSessionOK(t, s, other.AccessJWT)
	otherNext := refresh(t, s, other.RefreshJWT)

	// Logout survives a restart.
	s.Restart(t)
	mustFail(t, s, get, sessGet, nil, third.AccessJWT, http.StatusUnauthorized, "InvalidToken")
	mustFail(t, s, get, sessGet, nil, first.AccessJWT, http.StatusUnauthorized, "InvalidToken")
	mustFail(t, s, post, sessRefresh, nil, third.RefreshJWT, http.StatusBadRequest, "ExpiredToken")
	getSessionOK(t, s, otherNext.AccessJWT)
	// The rotated token of the live session still gets its successor.
	again := refresh(t, s, other.RefreshJWT)
	if jtiOf(t, again.RefreshJWT) != jtiOf(t, otherNext.RefreshJWT) {
		t.Errorf("after restart the retried refresh returned another successor")
	}
	refresh(t, s, otherNext.RefreshJWT)
}

type appPasswordOut struct {
	Name       string `json:"name"`
	Password   string `json:"password"`
	CreatedAt  string `json:"createdAt"`
	Privileged *bool  `json:"privileged"`
}

func createAppPassword(t *testing.T, s *pdstest.Server, tok, name string, privileged bool) appPasswordOut {
	t.Helper()
	var out appPasswordOut
	s.Call(t, post, apCreate, nil, obj{"name": name, "privileged": privileged}, tok, &out)
	if !appPasswordRE.MatchString(out.Password) {
		t.Fatalf("app password %q not in xxxx-xxxx-xxxx-xxxx form", out.Password)
	}
	if out.Privileged == nil || *out.Privileged != privileged {
		t.Errorf("privileged %v, want %v", out.Privileged, privileged)
	}
	if ts, err := time.Parse(time.RFC3339Nano, out.CreatedAt); err != nil || !strings.HasSuffix(out.CreatedAt, "Z") || time.Since(ts) > time.Minute {
		t.Errorf("createdAt %q (%v)", out.CreatedAt, err)
	}
	return out
}

func listAppPasswords(t *testing.T, s *pdstest.Server, tok string) []appPasswordOut {
	t.Helper()
	st, b := s.Do(t, get, apList, nil, nil, tok)
	if st != http.StatusOK {
		t.Fatalf("listAppPasswords: %d %s", st, b)
	}
	if bytes.Contains(b, []byte(`"password"`)) {
		t.Errorf("listAppPasswords shows passwords: %s", b)
	}
	var out struct {
		Passwords []appPasswordOut `json:"passwords"`
	}
	decode(t, b, &out)
	if out.Passwords == nil {
		t.Errorf("passwords is not an array: %s", b)
	}
	for _, ap := range out.Passwords {
		if _, err := time.Parse(time.RFC3339Nano, ap.CreatedAt); err != nil || !strings.HasSuffix(ap.CreatedAt, "Z") {
			t.Errorf("createdAt %q: %v", ap.CreatedAt, err)
		}
		if ap.Privileged == nil {
			t.Errorf("%s: no privileged field", ap.Name)
		}
	}
	return out.Passwords
}

func names(aps []appPasswordOut) []string {
	var n []string
	for _, ap := range aps {
		n = append(n, ap.Name)
	}
	return n
}

func TestAppPasswords(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t)
	owner := sessLogin(t, s, pdstest.Password).AccessJWT

	if got := listAppPasswords(t, s, owner); len(got) != 0 {
		t.Fatalf("fresh account lists %v", names(got))
	}
	phone := createAppPassword(t, s, owner, "  Phone app \t", false)
	if phone.Name != "Phone app" {
		t.Errorf("name %q, want it trimmed to %q", phone.Name, "Phone app")
	}
	chat := createAppPassword(t, s, owner, "Chat", true)
	long := createAppPassword(t, s, owner, strings.Repeat("n", 100), false)
	if long.Name != strings.Repeat("n", 100) {
		t.Errorf("100-character name changed to %q", long.Name)
	}
	// The admin token acts as the account too.
	spare := createAppPassword(t, s, s.AdminToken(), "Spare", false)

	t.Run("invalid names", func(t *testing.T) {
		for _, body := range []any{
			obj{"name": ""},
			obj{"name": "   "},
			obj{"name": strings.Repeat("n", 101)},
			obj{"name": strings.Repeat("é", 101)},
			obj{},
			obj{"name": 5},
		} {
			st, b := s.Do(t, post, apCreate, nil, body, owner)
			pdstest.MustError(t, st, b, http.StatusBadRequest, "InvalidRequest")
		}
		for _, name := range []string{"Phone app", " Phone app ", "Chat"} {
			st, b := s.Do(t, post, apCreate, nil, obj{"name": name}, owner)
			pdstest.MustError(t, st, b, http.StatusBadRequest, "DuplicateName")
		}
	})

	t.Run("list", func(t *testing.T) {
		got := listAppPasswords(t, s, owner)
		want := []string{"Spare", strings.Repeat("n", 100), "Chat", "Phone app"}
		if !slices.Equal(names(got), want) {
			t.Fatalf("listed %q, want newest first %q", names(got), want)
		}
		if !sort.SliceIsSorted(got, func(i, j int) bool { return got[i].CreatedAt > got[j].CreatedAt }) {
			t.Errorf("not sorted by createdAt descending: %+v", got)
		}
		for _, ap := range got {
			if ap.Name == "Chat" && !*ap.Privileged || ap.Name == "Phone app" && *ap.Privileged {
				t.Errorf("%s privileged %v", ap.Name, *ap.Privileged)
			}
			if ap.Name == "Phone app" && ap.CreatedAt != phone.CreatedAt {
				t.Errorf("listed createdAt %s, created %s", ap.CreatedAt, phone.CreatedAt)
			}
		}
	})

	t.Run("revoke unused", func(t *testing.T) {
		// Also keeps logins fast: an app-password-shaped password is
		// compared with every app password's bcrypt hash.
		var out struct {
			SessionsEnded *int `json:"sessionsEnded"`
		}
		s.Call(t, post, apRevoke, nil, obj{"name": long.Name}, owner, &out)
		if out.SessionsEnded == nil || *out.SessionsEnded != 0 {
			t.Errorf("sessionsEnded %v, want 0", out.SessionsEnded)
		}
		if got, want := names(listAppPasswords(t, s, owner)), []string{"Spare", "Chat", "Phone app"}; !slices.Equal(got, want) {
			t.Errorf("after revoking: %q, want %q", got, want)
		}
	})

	t.Run("revoke unknown", func(t *testing.T) {
		for _, name := range []string{"nope", "phone app", ""} {
			st, b := s.Do(t, post, apRevoke, nil, obj{"name": name}, owner)
			pdstest.MustError(t, st, b, http.StatusBadRequest, "InvalidRequest")
		}
	})

	// Sessions opened with app passwords.
	p1 := s.Login(t, s.Handle(), phone.Password)
	p2 := s.Login(t, s.DID(), phone.Password)
	c1 := s.Login(t, s.Handle(), chat.Password)
	if sc := scopeOf(t, p1.AccessJWT); sc != auth.ScopeAppPass {
		t.Errorf("app password session scope %q, want %q", sc, auth.ScopeAppPass)
	}
	if sc := scopeOf(t, c1.AccessJWT); sc != auth.ScopeAppPassPrivileged {
		t.Errorf("privileged app password session scope %q, want %q", sc, auth.ScopeAppPassPrivileged)
	}
	if sc := scopeOf(t, p1.RefreshJWT); sc != auth.ScopeRefresh {
		t.Errorf("app password refresh token scope %q", sc)
	}
	p1b := refresh(t, s, p1.RefreshJWT)
	if sc := scopeOf(t, p1b.AccessJWT); sc != auth.ScopeAppPass {
		t.Errorf("refreshed app password session scope %q, want %q", sc, auth.ScopeAppPass)
	}
	c1b := refresh(t, s, c1.RefreshJWT)
	if sc := scopeOf(t, c1b.AccessJWT); sc != auth.ScopeAppPassPrivileged {
		t.Errorf("refreshed privileged session scope %q", sc)
	}

	t.Run("app password session rights", func(t *testing.T) {
		for _, tok := range []string{p1b.AccessJWT, c1b.AccessJWT} {
			getSessionOK(t, s, tok)
			if got := listAppPasswords(t, s, tok); len(got) != 3 {
				t.Errorf("app password session lists %d app passwords", len(got))
			}
			var w writeOut
			s.Call(t, post, createRecord, nil, obj{"repo": s.DID(), "collection": postColl, "record": pdstest.Post("from an app")}, tok, &w)
			s.Call(t, post, deleteRecord, nil, obj{"repo": s.DID(), "collection": postColl, "rkey": w.RKey()}, tok, nil)
			for _, c := range []struct {
				nsid string
				body any
			}{
				{apCreate, obj{"name": "sneaky"}},
				{apRevoke, obj{"name": "Chat"}},
				{deactivateAccount, obj{}},
				{activateAccount, obj{}},
			} {
				env := mustFail(t, s, post, c.nsid, c.body, tok, http.StatusUnauthorized, "InvalidToken")
				if !strings.Contains(env.Message, "Bad token scope") {
					t.Errorf("%s: message %q, want it to say \"Bad token scope\"", c.nsid, env.Message)
				}
			}
			for _, nsid := range []string{opRotateJWT, opRotateAdmin, opSetPassword, opRotateKey} {
				mustFail(t, s, post, nsid, obj{}, tok, http.StatusForbidden, "Forbidden")
			}
		}
		// Nothing was created, revoked or deactivated.
		if got := listAppPasswords(t, s, owner); len(got) != 3 {
			t.Errorf("%d app passwords after refused calls", len(got))
		}
		var st accountStatus
		s.Call(t, get, checkAccountStatus, nil, nil, owner, &st)
		if st.Activated == nil || !*st.Activated {
			t.Errorf("account deactivated by an app password session")
		}
	})

	t.Run("revoke", func(t *testing.T) {
		// p1 was refreshed; p1 and p2 are two live sessions of "Phone app".
		var out struct {
			SessionsEnded *int `json:"sessionsEnded"`
		}
		s.Call(t, post, apRevoke, nil, obj{"name": "Phone app"}, owner, &out)
		if out.SessionsEnded == nil || *out.SessionsEnded != 2 {
			t.Errorf("sessionsEnded %v, want 2", out.SessionsEnded)
		}
		// Effective on the very next request.
		for _, tok := range []string{p1.AccessJWT, p1b.AccessJWT, p2.AccessJWT} {
			mustFail(t, s, get, sessGet, nil, tok, http.StatusUnauthorized, "InvalidToken")
			mustFail(t, s, get, apList, nil, tok, http.StatusUnauthorized, "InvalidToken")
		}
		mustFail(t, s, post, createRecord, obj{"repo": s.DID(), "collection": postColl, "record": pdstest.Post("x")}, p2.AccessJWT, http.StatusUnauthorized, "InvalidToken")
		for _, tok := range []string{p1.RefreshJWT, p1b.RefreshJWT, p2.RefreshJWT} {
			mustFail(t, s, post, sessRefresh, nil, tok, http.StatusBadRequest, "ExpiredToken")
		}
		st, b := loginErr(t, s, s.Handle(), phone.Password)
		pdstest.MustError(t, st, b, http.StatusUnauthorized, "AuthenticationRequired")
		if got := names(listAppPasswords(t, s, owner)); slices.Contains(got, "Phone app") {
			t.Errorf("revoked app password still listed: %q", got)
		}
		// Revoking again: it is gone.
		st, b = s.Do(t, post, apRevoke, nil, obj{"name": "Phone app"}, owner)
		pdstest.MustError(t, st, b, http.StatusBadRequest, "InvalidRequest")

		// Everything else still works.
		getSessionOK(t, s, owner)
		getSessionOK(t, s, c1b.AccessJWT)
		sessLogin(t, s, pdstest.Password)
		c2 := s.Login(t, s.Handle(), chat.Password)
		getSessionOK(t, s, c2.AccessJWT)
		getSessionOK(t, s, s.Login(t, s.Handle(), spare.Password).AccessJWT)
		// The name is free again.
		createAppPassword(t, s, owner, "Phone app", false)
	})

	t.Run("revocation survives restart", func(t *testing.T) {
		s.Restart(t)
		for _, tok := range []string{p1b.AccessJWT, p2.AccessJWT} {
			mustFail(t, s, get, sessGet, nil, tok, http.StatusUnauthorized, "InvalidToken")
		}
		mustFail(t, s, post, sessRefresh, nil, p2.RefreshJWT, http.StatusBadRequest, "ExpiredToken")
		getSessionOK(t, s, owner)
		getSessionOK(t, s, c1b.AccessJWT)
		refresh(t, s, c1b.RefreshJWT)
		st, b := loginErr(t, s, s.Handle(), phone.Password)
		pdstest.MustError(t, st, b, http.StatusUnauthorized, "AuthenticationRequired")
	})

	t.Run("revoke counts live sessions only", func(t *testing.T) {
		// Spare: one session logged out, one live, one refreshed twice.
		gone := s.Login(t, s.Handle(), spare.Password)
		s.Call(t, post, sessDelete, nil, nil, gone.RefreshJWT, nil)
		live := s.Login(t, s.Handle(), spare.Password)
		rot := s.Login(t, s.Handle(), spare.Password)
		rot = refresh(t, s, refresh(t, s, rot.RefreshJWT).RefreshJWT)
		var out struct {
			SessionsEnded int `json:"sessionsEnded"`
		}
		s.Call(t, post, apRevoke, nil, obj{"name": "Spare"}, owner, &out)
		// The admin-token session made earlier ("Spare" login in "revoke")
		// is live too.
		if out.SessionsEnded != 3 {
			t.Errorf("sessionsEnded %d, want 3 (two here, one from the revoke subtest)", out.SessionsEnded)
		}
		mustFail(t, s, get, sessGet, nil, live.AccessJWT, http.StatusUnauthorized, "InvalidToken")
		mustFail(t, s, get, sessGet, nil, rot.AccessJWT, http.StatusUnauthorized, "InvalidToken")
	})
}

// secretsOnDisk reads secrets.json back.
func secretsOnDisk(t *testing.T, s *pdstest.Server) config.Secrets {
	t.Helper()
	c, err := config.Load(s.DataDir())
	if err != nil {
		t.Fatal(err)
	}
	return c.Secrets
}

func TestOperatorRotateJWTSecret(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t)
	oldSecret := s.Config().JWTSecret
	a1 := sessLogin(t, s, pdstest.Password)
	a2 := sessLogin(t, s, pdstest.Password)
	a2 = refresh(t, s, a2.RefreshJWT)
	a3 := sessLogin(t, s, pdstest.Password)
	s.Call(t, post, sessDelete, nil, nil, a3.RefreshJWT, nil)
	ap := createAppPassword(t, s, a1.AccessJWT, "app", false)
	p1 := s.Login(t, s.Handle(), ap.Password)

	for _, tok := range []string{a1.AccessJWT, p1.AccessJWT} {
		mustFail(t, s, post, opRotateJWT, obj{}, tok, http.StatusForbidden, "Forbidden")
	}
	mustFail(t, s, post, opRotateJWT, obj{}, "", http.StatusUnauthorized, "AuthMissing")
	getSessionOK(t, s, a1.AccessJWT)

	var out struct {
		SessionsEnded *int `json:"sessionsEnded"`
	}
	s.Call(t, post, opRotateJWT, nil, obj{}, s.AdminToken(), &out)
	// a1, a2 and p1 were live; a3 had logged out.
	if out.SessionsEnded == nil || *out.SessionsEnded != 3 {
		t.Errorf("sessionsEnded %v, want 3", out.SessionsEnded)
	}
	for _, tok := range []string{a1.AccessJWT, a2.AccessJWT, p1.AccessJWT} {
		mustFail(t, s, get, sessGet, nil, tok, http.StatusUnauthorized, "InvalidToken")
	}
	for _, tok := range []string{a1.RefreshJWT, a2.RefreshJWT, p1.RefreshJWT} {
		mustFail(t, s, post, sessRefresh, nil, tok, http.StatusUnauthorized, "InvalidToken")
	}
	disk := secretsOnDisk(t, s)
	if disk.JWTSecret == oldSecret || disk.JWTSecret == "" || disk.JWTSecret != s.Config().JWTSecret {
		t.Errorf("secrets.json jwt-secret not replaced")
	}
	if disk.AdminToken != s.AdminToken() || disk.PasswordHash == "" || disk.SigningKey == "" {
		t.Errorf("secrets.json lost other secrets: %+v", disk)
	}

	n1 := sessLogin(t, s, pdstest.Password)
	getSessionOK(t, s, n1.AccessJWT)
	n2 := s.Login(t, s.Handle(), ap.Password) // app passwords survive
	if _, c := jwtParts(t, n1.AccessJWT); c["sub"] != s.DID() {
		t.Errorf("new token %v", c)
	}
	// A token signed with the old secret stays refused.
	now := time.Now()
	mustFail(t, s, get, sessGet, nil, forge(t, oldSecret, "at+jwt", jwt.MapClaims{"sub": s.DID(), "aud": "did:web:" + s.Hostname(), "scope": auth.ScopeAccess, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}), http.StatusUnauthorized, "InvalidToken")

	s.Restart(t)
	getSessionOK(t, s, n1.AccessJWT)
	getSessionOK(t, s, n2.AccessJWT)
	refresh(t, s, n1.RefreshJWT)
	mustFail(t, s, get, sessGet, nil, a1.AccessJWT, http.StatusUnauthorized, "InvalidToken")

	// A second rotation counts the sessions live now: n1 (refreshed) and n2.
	s.Call(t, post, opRotateJWT, nil, obj{}, s.AdminToken(), &out)
	if *out.SessionsEnded != 2 {
		t.Errorf("second rotation ended %d sessions, want 2", *out.SessionsEnded)
	}
}

func TestOperatorSetPassword(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t)
	sess := sessLogin(t, s, pdstest.Password)
	ap := createAppPassword(t, s, sess.AccessJWT, "app", false)

	mustFail(t, s, post, opSetPassword, obj{"password": "hijacked-password"}, sess.AccessJWT, http.StatusForbidden, "Forbidden")
	sessLogin(t, s, pdstest.Password)

	const given = "a-brand-new-password"
	st, b := s.Do(t, post, opSetPassword, nil, obj{"password": given}, s.AdminToken())
	if st != http.StatusOK {
		t.Fatalf("setPassword: %d %s", st, b)
	}
	var out struct {
		Password string `json:"password"`
	}
	decode(t, b, &out)
	if out.Password != "" {
		t.Errorf("setPassword echoed a given password: %s", b)
	}
	st, b = loginErr(t, s, s.Handle(), pdstest.Password)
	pdstest.MustError(t, st, b, http.StatusUnauthorized, "AuthenticationRequired")
	sessLogin(t, s, given)
	s.Login(t, s.Handle(), ap.Password)
	getSessionOK(t, s, sess.AccessJWT) // sessions are unaffected

	for _, bad := range []string{"short", strings.Repeat("x", 73)} {
		mustFail(t, s, post, opSetPassword, obj{"password": bad}, s.AdminToken(), http.StatusBadRequest, "InvalidRequest")
	}
	sessLogin(t, s, given)

	s.Call(t, post, opSetPassword, nil, obj{}, s.AdminToken(), &out)
	if !appPasswordRE.MatchString(out.Password) {
		t.Fatalf("generated password %q", out.Password)
	}
	generated := out.Password
	st, b = loginErr(t, s, s.Handle(), given)
	pdstest.MustError(t, st, b, http.StatusUnauthorized, "AuthenticationRequired")
	sessLogin(t, s, generated)
	s.Login(t, s.Handle(), ap.Password)
	if h := secretsOnDisk(t, s).PasswordHash; !auth.CheckPassword(h, generated) {
		t.Errorf("secrets.json password hash does not match the new password")
	}

	s.Restart(t)
	sessLogin(t, s, generated)
	s.Login(t, s.Handle(), ap.Password)
	st, b = loginErr(t, s, s.Handle(), pdstest.Password)
	pdstest.MustError(t, st, b, http.StatusUnauthorized, "AuthenticationRequired")
}

func TestOperatorRotateAdminToken(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t)
	old := s.AdminToken()
	sess := sessLogin(t, s, pdstest.Password)
	mustFail(t, s, post, opRotateAdmin, obj{}, sess.AccessJWT, http.StatusForbidden, "Forbidden")

	var out struct {
		AdminToken string `json:"adminToken"`
	}
	s.Call(t, post, opRotateAdmin, nil, obj{}, old, &out)
	if out.AdminToken == "" || out.AdminToken == old {
		t.Fatalf("new admin token %q", out.AdminToken)
	}
	write := obj{"repo": s.DID(), "collection": unknownColl, "record": thing(1)}
	mustFail(t, s, post, createRecord, write, old, http.StatusUnauthorized, "InvalidToken")
	mustFail(t, s, post, opRotateAdmin, obj{}, old, http.StatusUnauthorized, "InvalidToken")
	st, b := s.Raw(t, post, "/xrpc/"+opRotateJWT, http.Header{"Authorization": {"Basic " + basic("admin", old)}}, nil)
	pdstest.MustError(t, st.StatusCode, b, http.StatusUnauthorized, "InvalidToken")
	s.Call(t, post, createRecord, nil, write, out.AdminToken, nil)
	st, b = s.Raw(t, get, "/xrpc/"+sessGet, http.Header{"Authorization": {"Basic " + basic("admin", out.AdminToken)}}, nil)
	if st.StatusCode != http.StatusOK {
		t.Errorf("basic auth with the new token: %d %s", st.StatusCode, b)
	}
	if secretsOnDisk(t, s).AdminToken != out.AdminToken {
		t.Errorf("secrets.json admin-token not replaced")
	}
	getSessionOK(t, s, sess.AccessJWT) // sessions are unaffected

	s.Restart(t)
	mustFail(t, s, post, createRecord, write, old, http.StatusUnauthorized, "InvalidToken")
	s.Call(t, post, createRecord, nil, write, out.AdminToken, nil)
}

func TestOperatorRotateSigningKey(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t)
	ctx := context.Background()
	seedThings(t, s, unknownColl, 30)
	oldKey, _ := didDocKey(t, s)
	before := verifyFullRepo(t, s.DID(), oldKey, fetchRepo(t, s))
	seq := s.LastSeq(t)

	sess := sessLogin(t, s, pdstest.Password)
	mustFail(t, s, post, opRotateKey, obj{}, sess.AccessJWT, http.StatusForbidden, "Forbidden")
	if s.LastSeq(t) != seq {
		t.Fatalf("refused rotation emitted events")
	}

	var out struct {
		DID              string   `json:"did"`
		SigningKeyPublic string   `json:"signingKeyPublic"`
		Method           string   `json:"didMethod"`
		FollowUp         []string `json:"followUp"`
	}
	s.Call(t, post, opRotateKey, nil, obj{}, s.AdminToken(), &out)
	if out.DID != s.DID() || out.Method != "web" || len(out.FollowUp) != 0 {
		t.Errorf("rotateSigningKey answer %+v", out)
	}
	newKey, err := atcrypto.ParsePublicDIDKey(out.SigningKeyPublic)
	if err != nil {
		t.Fatalf("signingKeyPublic %q: %v", out.SigningKeyPublic, err)
	}
	if newKey.DIDKey() == oldKey.DIDKey() {
		t.Fatalf("key did not change")
	}
	if pub, _ := didDocKey(t, s); pub.DIDKey() != newKey.DIDKey() {
		t.Errorf("did.json key %s, want the new %s", pub.DIDKey(), newKey.DIDKey())
	}
	var gs pdstest.Session
	s.Call(t, get, sessGet, nil, nil, sess.AccessJWT, &gs)
	if !strings.Contains(string(gs.DIDDoc), strings.TrimPrefix(newKey.DIDKey(), "did:key:")) {
		t.Errorf("getSession didDoc does not show the new key: %s", gs.DIDDoc)
	}

	h := head(t, s)
	if h.Rev <= before.commit.Rev {
		t.Errorf("rev %s after rotation, want > %s", h.Rev, before.commit.Rev)
	}
	car := fetchRepo(t, s)
	after := verifyFullRepo(t, s.DID(), newKey, car)
	commit, _, err := atrepo.LoadRepoFromCAR(ctx, bytes.NewReader(car))
	if err != nil {
		t.Fatalf("LoadRepoFromCAR: %v", err)
	}
	if err := commit.VerifySignature(newKey); err != nil {
		t.Errorf("re-signed commit does not verify with the new key: %v", err)
	}
	if err := commit.VerifySignature(oldKey); err == nil {
		t.Errorf("re-signed commit verifies with the old key")
	}
	if after.commit.Data != before.commit.Data || len(after.records) != len(before.records) {
		t.Errorf("re-signing changed the tree")
	}
	if after.commitCID.String() != h.CID || commit.Rev != h.Rev {
		t.Errorf("getRepo commit %s/%s, getLatestCommit %s/%s", after.commitCID, commit.Rev, h.CID, h.Rev)
	}

	// Firehose: #identity, then #sync of the re-signed commit.
	evs := s.Events(t, seq)
	var types []string
	for _, ev := range evs {
		types = append(types, ev.Type)
	}
	if !slices.Equal(types, []string{"identity", "sync"}) {
		t.Fatalf("events after rotation %v, want [identity sync]", types)
	}
	var idEv comatproto.SyncSubscribeRepos_Identity
	if err := idEv.UnmarshalCBOR(bytes.NewReader(evs[0].Payload)); err != nil {
		t.Fatal(err)
	}
	if idEv.Did != s.DID() || idEv.Handle == nil || *idEv.Handle != s.Handle() {
		t.Errorf("#identity %+v", idEv)
	}
	var syncEv comatproto.SyncSubscribeRepos_Sync
	if err := syncEv.UnmarshalCBOR(bytes.NewReader(evs[1].Payload)); err != nil {
		t.Fatal(err)
	}
	if syncEv.Did != s.DID() || syncEv.Rev != h.Rev {
		t.Errorf("#sync did %s rev %s, want %s %s", syncEv.Did, syncEv.Rev, s.DID(), h.Rev)
	}
	f := parseCAR(t, syncEv.Blocks)
	if f.roots[0].String() != h.CID {
		t.Errorf("#sync CAR root %s, want %s", f.roots[0], h.CID)
	}
	if err := f.commit(t).VerifySignature(newKey); err != nil {
		t.Errorf("#sync commit does not verify with the new key: %v", err)
	}

	// Later writes are signed with the new key, the #commit event too.
	w := s.CreateRecord(t, postColl, "", pdstest.Post("after rotation"))
	var ev comatproto.SyncSubscribeRepos_Commit
	if err := ev.UnmarshalCBOR(bytes.NewReader(s.LastEventPayload(t, "commit"))); err != nil {
		t.Fatal(err)
	}
	if ev.Rev != w.Commit.Rev {
		t.Errorf("commit event rev %s, want %s", ev.Rev, w.Commit.Rev)
	}
	if err := parseCAR(t, ev.Blocks).commit(t).VerifySignature(newKey); err != nil {
		t.Errorf("#commit after rotation: %v", err)
	}
	if ev.Since == nil || *ev.Since != h.Rev {
		t.Errorf("commit since %v, want the re-signed rev %s", ev.Since, h.Rev)
	}
	if _, err := atrepo.VerifyCommitMessage(ctx, &ev); err != nil {
		t.Errorf("VerifyCommitMessage: %v", err)
	}
	verifyFullRepo(t, s.DID(), newKey, fetchRepo(t, s))

	// The key survives a restart.
	s.Restart(t)
	if pub, _ := didDocKey(t, s); pub.DIDKey() != newKey.DIDKey() {
		t.Errorf("did.json after restart shows %s, want %s", pub.DIDKey(), newKey.DIDKey())
	}
	if c := s.Config(); c.SigningKeyPublic != newKey.DIDKey() {
		t.Errorf("settings.json signing-key-public %s, want %s", c.SigningKeyPublic, newKey.DIDKey())
	}
	s.CreateRecord(t, postColl, "", pdstest.Post("after restart"))
	verifyFullRepo(t, s.DID(), newKey, fetchRepo(t, s))
}

func TestOperatorRotateSigningKeyPLC(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t, pdstest.WithDIDMethod("plc"))
	var out struct {
		DID              string   `json:"did"`
		SigningKeyPublic string   `json:"signingKeyPublic"`
		Method           string   `json:"didMethod"`
		FollowUp         []string `json:"followUp"`
	}
	s.Call(t, post, opRotateKey, nil, obj{}, s.AdminToken(), &out)
	if out.Method != "plc" || len(out.FollowUp) == 0 || !strings.Contains(strings.Join(out.FollowUp, "\n"), out.SigningKeyPublic) {
		t.Errorf("did:plc rotation answer %+v", out)
	}
	newKey, err := atcrypto.ParsePublicDIDKey(out.SigningKeyPublic)
	if err != nil {
		t.Fatal(err)
	}
	verifyFullRepo(t, s.DID(), newKey, fetchRepo(t, s))
}
