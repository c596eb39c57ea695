package ratelimit

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
)

// Bypass reports whether r carries the operator's rate-limit bypass key in
// the x-ratelimit-bypass header, the header AT Protocol services use for it.
// An empty key disables bypassing. The comparison is of SHA-256 digests in
// constant time, so timing reveals neither the key's content nor its length.
func Bypass(r *http.Request, key string) bool {
	if key == "" {
		return false
	}
	got := sha256.Sum256([]byte(r.Header.Get("X-Ratelimit-Bypass")))
	want := sha256.Sum256([]byte(key))
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1
}
