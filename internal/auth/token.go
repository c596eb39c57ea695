package auth

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"stratus/internal/pdserr"
)

// Scopes of session tokens, as the reference PDS issues them.
const (
	ScopeAccess            = "com.atproto.access"
	ScopeAppPass           = "com.atproto.appPass"
	ScopeAppPassPrivileged = "com.atproto.appPassPrivileged"
	ScopeRefresh           = "com.atproto.refresh"
)

// Token lifetimes.
const (
	AccessTTL  = 120 * time.Minute
	RefreshTTL = 90 * 24 * time.Hour
)

// JWT "typ" headers that keep access and refresh tokens from being used in
// each other's place.
const (
	typAccess  = "at+jwt"
	typRefresh = "refresh+jwt"
)

// Claims are the claims of session tokens. SID names the session (one
// login and its refreshes) so that it can be ended before its access tokens
// expire. The audience is a single string, as the reference PDS writes it.
type Claims struct {
	Subject   string           `json:"sub"`
	Audience  string           `json:"aud"`
	IssuedAt  *jwt.NumericDate `json:"iat,omitempty"`
	ExpiresAt *jwt.NumericDate `json:"exp,omitempty"`
	ID        string           `json:"jti,omitempty"`
	Scope     string           `json:"scope"`
	SID       string           `json:"sid,omitempty"`
}

// GetExpirationTime implements jwt.Claims.
func (c Claims) GetExpirationTime() (*jwt.NumericDate, error) { return c.ExpiresAt, nil }

// GetIssuedAt implements jwt.Claims.
func (c Claims) GetIssuedAt() (*jwt.NumericDate, error) { return c.IssuedAt, nil }

// GetNotBefore implements jwt.Claims.
func (c Claims) GetNotBefore() (*jwt.NumericDate, error) { return nil, nil }

// GetIssuer implements jwt.Claims.
func (c Claims) GetIssuer() (string, error) { return "", nil }

// GetSubject implements jwt.Claims.
func (c Claims) GetSubject() (string, error) { return c.Subject, nil }

// GetAudience implements jwt.Claims.
func (c Claims) GetAudience() (jwt.ClaimStrings, error) { return jwt.ClaimStrings{c.Audience}, nil }

// Tokens signs and verifies HS256 session tokens. The secret can be
// replaced at run time; every token signed with the old one then fails.
type Tokens struct {
	secret atomic.Pointer[[]byte]
	aud    string
	now    func() time.Time
	cache  tokenCache
}

// NewTokens returns a signer for tokens whose audience is aud (the server's
// did:web).
func NewTokens(secret, aud string, now func() time.Time) *Tokens {
	if now == nil {
		now = time.Now
	}
	t := &Tokens{aud: aud, now: now}
	t.SetSecret(secret)
	return t
}

// SetSecret replaces the signing secret.
func (t *Tokens) SetSecret(secret string) {
	b := []byte(secret)
	t.secret.Store(&b)
}

func (t *Tokens) sign(typ string, c Claims) (string, error) {
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, c)
	tok.Header["typ"] = typ
	s, err := tok.SignedString(*t.secret.Load())
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	return s, nil
}

// issueAccess signs an access token for sub with scope.
func (t *Tokens) issueAccess(sub, scope, sid string) (string, error) {
	now := t.now()
	return t.sign(typAccess, Claims{
		Subject:   sub,
		Audience:  t.aud,
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(AccessTTL)),
		Scope:     scope,
		SID:       sid,
	})
}

// issueRefresh signs a refresh token with id jti that expires at exp.
func (t *Tokens) issueRefresh(sub, jti, sid string, exp time.Time) (string, error) {
	return t.sign(typRefresh, Claims{
		Subject:  sub,
		Audience: t.aud,
		// Issue time follows from expiry, so a successor re-issued within
		// the grace window is the same token, byte for byte.
		IssuedAt:  jwt.NewNumericDate(exp.Add(-RefreshTTL)),
		ExpiresAt: jwt.NewNumericDate(exp),
		ID:        jti,
		Scope:     ScopeRefresh,
		SID:       sid,
	})
}

// parse verifies a token of the given typ. A bad signature, a wrong
// audience or a token of the other kind is InvalidToken; an expired but
// otherwise valid token is ExpiredToken, which clients answer by
// refreshing.
func (t *Tokens) parse(s, typ string) (*Claims, error) {
	secret := t.secret.Load()
	key := tokenKey{sum: sha256.Sum256([]byte(s)), typ: typ}
	// Only access tokens are cached: they come with every request, while
	// a refresh token is used once.
	cached := typ == typAccess
	if cached {
		if c, ok := t.cache.get(key, secret, t.now()); ok {
			return c, nil
		}
	}
	var c Claims
	tok, err := jwt.ParseWithClaims(s, &c, func(*jwt.Token) (any, error) { return *secret, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithAudience(t.aud),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(t.now),
	)
	switch {
	case err == nil:
	case errors.Is(err, jwt.ErrTokenExpired):
		return nil, pdserr.New(pdserr.ExpiredToken, "Token has expired")
	default:
		return nil, pdserr.Wrap(err, pdserr.InvalidToken, "Token could not be verified")
	}
	if got, _ := tok.Header["typ"].(string); got != typ {
		return nil, pdserr.New(pdserr.InvalidToken, "Invalid token type")
	}
	if c.Subject == "" {
		return nil, pdserr.New(pdserr.InvalidToken, "Token has no subject")
	}
	if cached {
		t.cache.put(key, secret, &c)
	}
	return &c, nil
}
