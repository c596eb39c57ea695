package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"fmt"
	"runtime/debug"
	"strings"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/crypto/scrypt"
)

// MinPasswordLength is the shortest account password accepted.
const MinPasswordLength = 8

// maxPasswordBytes is bcrypt's input limit; longer passwords would be
// silently truncated, so they are refused instead.
const maxPasswordBytes = 72

// HashPassword returns the bcrypt hash of an account password.
func HashPassword(pw string) (string, error) {
	if len(pw) < MinPasswordLength {
		return "", fmt.Errorf("password must be at least %d characters", MinPasswordLength)
	}
	if len(pw) > maxPasswordBytes {
		return "", fmt.Errorf("password must be at most %d bytes", maxPasswordBytes)
	}
	h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.DefaultCost)
	if err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	return string(h), nil
}

// CheckPassword reports whether pw matches a bcrypt hash.
func CheckPassword(hash, pw string) bool {
	return bcrypt.CompareHashAndPassword([]byte(hash), []byte(pw)) == nil
}

var lowerBase32 = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// GeneratePassword returns a random password in the xxxx-xxxx-xxxx-xxxx
// form (80 bits), easy to read aloud and to type.
func GeneratePassword() string {
	b := make([]byte, 10)
	rand.Read(b)
	s := lowerBase32.EncodeToString(b)
	return strings.Join([]string{s[0:4], s[4:8], s[8:12], s[12:16]}, "-")
}

// GenerateToken returns a random 256-bit token as unpadded base32.
func GenerateToken() string {
	b := make([]byte, 32)
	rand.Read(b)
	return lowerBase32.EncodeToString(b)
}

// AppPasswordHasher runs app-password hashes one at a time. Each needs a
// 32 MB buffer (128·N·r bytes); logins are limited per client, not in
// total, so a burst of them would otherwise hold 32 MB each at once, more
// than the rest of the server on a small machine. Hashing is CPU-bound, so
// on such a machine concurrent hashes would only share its cores anyway.
type AppPasswordHasher struct{ slot chan struct{} }

// NewAppPasswordHasher returns a hasher with one slot.
func NewAppPasswordHasher() *AppPasswordHasher {
	return &AppPasswordHasher{slot: make(chan struct{}, 1)}
}

// Hash is HashAppPassword once the slot is free; it gives up when ctx
// ends first.
func (h *AppPasswordHasher) Hash(ctx context.Context, did syntax.DID, pw string) (string, error) {
	select {
	case h.slot <- struct{}{}:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	defer func() { <-h.slot }()
	return HashAppPassword(did, pw)
}

// HashAppPassword returns the stored form of an app password: scrypt
// (N=32768, r=8, p=1) salted with a value derived from the account's DID.
// The salt is per account rather than per password so that a login can
// find its app password by hash; app passwords carry 80 random bits, so
// precomputation is hopeless either way.
func HashAppPassword(did syntax.DID, pw string) (string, error) {
	salt := sha256.Sum256([]byte("stratus app password\x00" + did.String()))
	key, err := scrypt.Key([]byte(pw), salt[:], 1<<15, 8, 1, 32)
	// The 32 MB buffer is garbage once scrypt returns, but allocating it
	// started a collection that found it live, so the heap goal is now
	// about 70 MB: the heap would grow that far before the next
	// collection, and the runtime hands idle pages back to the kernel only
	// over the following seconds. That set the server's peak resident
	// size, reached in the writes after its first login. A forced
	// collection here (about 3 ms, against 60-100 ms of hashing) puts the
	// goal back at twice the live heap and returns the buffer at once.
	debug.FreeOSMemory()
	if err != nil {
		return "", fmt.Errorf("hash app password: %w", err)
	}
	return "scrypt:" + base64.RawStdEncoding.EncodeToString(key), nil
}
