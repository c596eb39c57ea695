// Package auth identifies callers. A Principal is who a request acts as;
// the Verifier turns request credentials into one. Today the operator's
// admin token is the credential; session tokens, app passwords, OAuth and
// service tokens add kinds of Principal without changing handlers.
package auth

import (
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"stratus/internal/pdserr"
)

// Kind is how a principal authenticated.
type Kind int

// Kinds of principal.
const (
	// Admin is the operator, holding the admin token. It acts for every
	// account hosted on the server.
	Admin Kind = iota + 1
	// Access is a full session of an account.
	Access
	// AppPass is a session created with an app password.
	AppPass
	// Service is another service calling on an account's behalf with a
	// service JWT the account signed (inter-service auth), bound to one
	// method. It is accepted only where a route allows it.
	Service
)

// String names the kind for logs.
func (k Kind) String() string {
	switch k {
	case Admin:
		return "admin"
	case Access:
		return "access"
	case AppPass:
		return "app-password"
	case Service:
		return "service"
	}
	return "unknown"
}

// Principal is the authenticated caller of a request.
type Principal struct {
	Kind Kind
	// DID is the account the principal belongs to; empty for Admin.
	DID syntax.DID
	// Privileged marks an app-password session whose app password was
	// created privileged (it may reach chat.bsky.*).
	Privileged bool
}

// Owner reports whether the principal may do what only the account owner
// may (create app passwords, change credentials, deactivate, ...): the
// operator and full sessions may, app-password sessions may not.
func (p *Principal) Owner() bool {
	return p != nil && (p.Kind == Admin || p.Kind == Access)
}

// ActsFor reports whether the principal may act on did's account.
func (p *Principal) ActsFor(did syntax.DID) bool {
	if p == nil {
		return false
	}
	return p.Kind == Admin || p.DID == did
}

// Verifier authenticates requests.
type Verifier struct {
	adminToken atomic.Pointer[[]byte]
	sessions   *Sessions
}

// NewVerifier returns a verifier that accepts adminToken as the operator's
// credential, as "Bearer <token>" or as Basic "admin:<token>" (the form the
// reference PDS's admin tools send), and session access tokens checked by
// sessions (which may be nil to accept only the admin token).
func NewVerifier(adminToken string, sessions *Sessions) *Verifier {
	v := &Verifier{sessions: sessions}
	v.SetAdminToken(adminToken)
	return v
}

// SetAdminToken replaces the operator's token; the old one stops working.
func (v *Verifier) SetAdminToken(tok string) {
	b := []byte(tok)
	v.adminToken.Store(&b)
}

// bearer returns the credential of an Authorization header.
func bearer(r *http.Request) (scheme, cred string, err error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return "", "", pdserr.New(pdserr.AuthMissing, "Authorization header required")
	}
	scheme, cred, ok := strings.Cut(h, " ")
	if !ok {
		return "", "", pdserr.New(pdserr.AuthMissing, "Invalid authorization header")
	}
	return strings.ToLower(scheme), strings.TrimSpace(cred), nil
}

// Authenticate returns the principal of r: the operator or an access
// token's session. A request without credentials gets AuthMissing; wrong
// credentials get InvalidToken; an expired access token gets ExpiredToken.
func (v *Verifier) Authenticate(r *http.Request) (*Principal, error) {
	scheme, cred, err := bearer(r)
	if err != nil {
		return nil, err
	}
	switch scheme {
	case "bearer":
		if v.isAdmin([]byte(cred)) {
			return &Principal{Kind: Admin}, nil
		}
		if v.sessions != nil && strings.Count(cred, ".") == 2 {
			return v.sessions.Verify(cred)
		}
	case "basic":
		raw, err := base64.StdEncoding.DecodeString(cred)
		if err != nil {
			return nil, pdserr.New(pdserr.InvalidToken, "Invalid basic authorization")
		}
		user, pass, _ := strings.Cut(string(raw), ":")
		if user == "admin" && v.isAdmin([]byte(pass)) {
			return &Principal{Kind: Admin}, nil
		}
	default:
		return nil, pdserr.New(pdserr.AuthMissing, "Unsupported authorization scheme")
	}
	return nil, pdserr.New(pdserr.InvalidToken, "Invalid authentication token")
}

// RefreshToken returns the bearer token of r, for the methods that take a
// refresh token (refreshSession, deleteSession).
func (v *Verifier) RefreshToken(r *http.Request) (string, error) {
	scheme, cred, err := bearer(r)
	if err != nil {
		return "", err
	}
	if scheme != "bearer" || cred == "" {
		return "", pdserr.New(pdserr.InvalidToken, "Expected a bearer refresh token")
	}
	return cred, nil
}

// isAdmin compares in constant time so that response timing reveals
// nothing about the token.
func (v *Verifier) isAdmin(tok []byte) bool {
	admin := *v.adminToken.Load()
	return len(admin) > 0 && subtle.ConstantTimeCompare(tok, admin) == 1
}
