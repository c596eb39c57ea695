package xrpc

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	atauth "github.com/bluesky-social/indigo/atproto/auth"
	"github.com/bluesky-social/indigo/atproto/syntax"

	"stratus/internal/auth"
	"stratus/internal/serviceauth"
)

// The authService level accepts a service JWT signed by a hosted account
// for this server and this method, once, and everything authRequired
// accepts; it refuses tokens for another audience, another method, from
// an unknown issuer, with a bad signature, expired or replayed.
func TestAuthServiceLevel(t *testing.T) {
	const (
		self   = syntax.DID("did:web:pds.test")
		method = "com.atproto.repo.uploadBlob"
		admin  = "admin-token-for-the-test"
	)
	key, _ := atcrypto.GeneratePrivateKeyK256()
	pub, _ := key.PublicKey()
	other, _ := atcrypto.GeneratePrivateKeyK256()
	keys := func(_ context.Context, did syntax.DID) (atcrypto.PublicKey, error) {
		if did != "did:plc:alice" {
			return nil, fmt.Errorf("unknown %s", did)
		}
		return pub, nil
	}
	s := New(Deps{
		Auth:        auth.NewVerifier(admin, nil),
		ServiceAuth: serviceauth.NewVerifier(self.String(), keys, nil),
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	s.routes[method] = route{method: http.MethodPost, auth: authService, handle: func(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
		return writeJSON(w, map[string]string{"as": p.Kind.String() + " " + p.DID.String()})
	}}
	call := func(tok string) (int, string) {
		req := httptest.NewRequest(http.MethodPost, "/xrpc/"+method, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		return rec.Code, rec.Body.String()
	}
	mint := func(iss syntax.DID, aud, lxm string, ttl time.Duration, k atcrypto.PrivateKey) string {
		n := syntax.NSID(lxm)
		tok, err := atauth.SignServiceAuth(iss, aud, ttl, &n, k)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	good := mint("did:plc:alice", self.String(), method, time.Minute, key)
	if code, body := call(good); code != 200 || body != "{\"as\":\"service did:plc:alice\"}\n" {
		t.Fatalf("valid token: %d %s", code, body)
	}
	for _, c := range []struct {
		name, tok, want string
	}{
		{"replayed", good, serviceauth.JwtReplayed},
		{"other audience", mint("did:plc:alice", "did:web:elsewhere.test", method, time.Minute, key), serviceauth.BadJwtAudience},
		{"other method", mint("did:plc:alice", self.String(), "com.atproto.repo.createRecord", time.Minute, key), serviceauth.BadJwtLexiconMethod},
		{"unknown issuer", mint("did:plc:bob", self.String(), method, time.Minute, key), serviceauth.BadJwtIss},
		{"wrong key", mint("did:plc:alice", self.String(), method, time.Minute, other), serviceauth.BadJwtSignature},
		{"expired", mint("did:plc:alice", self.String(), method, -time.Minute, key), serviceauth.JwtExpired},
	} {
		code, body := call(c.tok)
		if code != 401 || !containsName(body, c.want) {
			t.Errorf("%s: %d %s, want 401 %s", c.name, code, body, c.want)
		}
	}
	if code, body := call(admin); code != 200 || body != "{\"as\":\"admin \"}\n" {
		t.Fatalf("admin token: %d %s", code, body)
	}
}

func containsName(body, name string) bool { return strings.Contains(body, `"error":"`+name+`"`) }
