package auth

import (
	"crypto/sha256"
	"sync"
	"time"
)

// maxCachedTokens bounds the verified-token cache; when it is full it is
// emptied, which costs one full verification per token in use.
const maxCachedTokens = 1024

// tokenCache remembers access tokens that verified, for their lifetime, so
// that a client sending the same token on every request pays for the
// HMAC, the base64 and the JSON of the token once. Entries are keyed by
// the SHA-256 of the token bytes, so a lookup never compares secret bytes
// of one token with another's, and by the secret they verified under, so
// rotating the secret invalidates them all. Revocation (ended sessions) is
// checked by the caller on every request, cached or not.
type tokenCache struct {
	mu      sync.Mutex
	entries map[tokenKey]cachedToken
}

type tokenKey struct {
	sum [sha256.Size]byte
	typ string
}

type cachedToken struct {
	claims Claims
	secret *[]byte
}

// get returns the claims of token when it verified under secret before and
// has not expired at now.
func (c *tokenCache) get(k tokenKey, secret *[]byte, now time.Time) (*Claims, bool) {
	c.mu.Lock()
	e, ok := c.entries[k]
	if ok && (e.secret != secret || !now.Before(e.claims.ExpiresAt.Time)) {
		delete(c.entries, k)
		ok = false
	}
	c.mu.Unlock()
	if !ok {
		return nil, false
	}
	claims := e.claims
	return &claims, true
}

// put remembers claims that verified under secret.
func (c *tokenCache) put(k tokenKey, secret *[]byte, claims *Claims) {
	if claims.ExpiresAt == nil {
		return
	}
	c.mu.Lock()
	if c.entries == nil || len(c.entries) >= maxCachedTokens {
		c.entries = make(map[tokenKey]cachedToken)
	}
	c.entries[k] = cachedToken{claims: *claims, secret: secret}
	c.mu.Unlock()
}
