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
	// AppPassword is a session created with an app password.
	AppPassword
)

// String names the kind for logs.
func (k Kind) String() string {
	switch k {
	case Admin:
		return "admin"
	case Access:
		return "access"
	case AppPassword:
		return "app-password"
	}
	return "unknown"
}

// Principal is the authenticated caller of a request.
type Principal struct {
	Kind Kind
	// DID is the account the principal belongs to; empty for Admin.
	DID syntax.DID
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
	adminToken []byte
}

// NewVerifier returns a verifier that accepts adminToken as the operator's
// credential, as "Bearer <token>" or as Basic "admin:<token>" (the form the
// reference PDS's admin tools send).
func NewVerifier(adminToken string) *Verifier {
	return &Verifier{adminToken: []byte(adminToken)}
}

// Authenticate returns the principal of r. A request without credentials
// gets AuthMissing; wrong credentials get InvalidToken.
func (v *Verifier) Authenticate(r *http.Request) (*Principal, error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return nil, pdserr.New(pdserr.AuthMissing, "Authorization header required")
	}
	scheme, cred, ok := strings.Cut(h, " ")
	if !ok {
		return nil, pdserr.New(pdserr.AuthMissing, "Invalid authorization header")
	}
	switch strings.ToLower(scheme) {
	case "bearer":
		if v.isAdmin([]byte(strings.TrimSpace(cred))) {
			return &Principal{Kind: Admin}, nil
		}
	case "basic":
		raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(cred))
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

// isAdmin compares in constant time so that response timing reveals
// nothing about the token.
func (v *Verifier) isAdmin(tok []byte) bool {
	return len(v.adminToken) > 0 && subtle.ConstantTimeCompare(tok, v.adminToken) == 1
}
