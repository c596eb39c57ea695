// Package serviceauth mints and checks inter-service JWTs: short-lived
// tokens an account signs with its repository signing key so that another
// service (the AppView, the chat service, a video service) can act on, or
// accept a call from, the account. Signing and signature checks are
// indigo's atproto/auth; this package adds what indigo leaves out: a
// required, single-use jti, refusal of session-shaped tokens, and a key
// directory limited to the accounts hosted here.
//
// Importing indigo's atproto/auth registers its ES256 and ES256K signing
// methods in golang-jwt's global table. Session tokens are HS256 and are
// parsed with an explicit method list, so they are unaffected.
package serviceauth

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	atauth "github.com/bluesky-social/indigo/atproto/auth"
	"github.com/bluesky-social/indigo/atproto/identity"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/golang-jwt/jwt/v5"

	"stratus/internal/pdserr"
)

// DefaultTTL is the lifetime of the tokens the server mints for proxied
// requests: long enough for one request, short enough that a leaked token
// is useless soon after.
const DefaultTTL = 60 * time.Second

// MaxTTL is the longest lifetime getServiceAuth grants.
const MaxTTL = time.Hour

// Keys returns the private signing key of a hosted account.
type Keys interface {
	SigningKey(ctx context.Context, did syntax.DID) (atcrypto.PrivateKey, error)
}

// Signer mints service JWTs for hosted accounts.
type Signer struct {
	Keys Keys
}

// Mint returns a JWT with iss = did, the given aud and lxm (nil for a
// method-less token), expiring after ttl, with a random jti.
func (s *Signer) Mint(ctx context.Context, did syntax.DID, aud string, lxm *syntax.NSID, ttl time.Duration) (string, error) {
	priv, err := s.Keys.SigningKey(ctx, did)
	if err != nil {
		return "", fmt.Errorf("signing key of %s: %w", did, err)
	}
	tok, err := atauth.SignServiceAuth(did, aud, ttl, lxm, priv)
	if err != nil {
		return "", fmt.Errorf("sign service token: %w", err)
	}
	return tok, nil
}

// Error names of refused service tokens, as the reference implementation
// spells them; all are 401.
const (
	BadJwt              = "BadJwt"
	BadJwtType          = "BadJwtType"
	JwtExpired          = "JwtExpired"
	BadJwtAudience      = "BadJwtAudience"
	BadJwtLexiconMethod = "BadJwtLexiconMethod"
	BadJwtIss           = "BadJwtIss"
	BadJwtSignature     = "BadJwtSignature"
	JwtReplayed         = "JwtReplayed"
)

// ErrorNames lists the names above, for the transport's status table.
var ErrorNames = []string{BadJwt, BadJwtType, JwtExpired, BadJwtAudience, BadJwtLexiconMethod, BadJwtIss, BadJwtSignature, JwtReplayed}

// PublicKeys returns the current public signing key of a hosted account,
// or an error for any other DID.
type PublicKeys func(ctx context.Context, did syntax.DID) (atcrypto.PublicKey, error)

// Verifier checks inbound service JWTs addressed to this server.
type Verifier struct {
	// Audience is this server's service DID; tokens must name exactly it.
	Audience string
	dir      identity.Directory
	now      func() time.Time

	mu   sync.Mutex
	seen map[string]time.Time // jti → when it may be forgotten
}

// leeway is the clock skew tolerated on exp and iat, as indigo's default.
const leeway = 5 * time.Second

// NewVerifier returns a verifier for tokens whose aud is audience and
// whose issuer is a hosted account whose key keys returns. Only hosted
// accounts can be issuers: a service token acts as the account, so it must
// be signed by the account's key as this server knows it, with no network
// lookup an attacker could influence.
func NewVerifier(audience string, keys PublicKeys, now func() time.Time) *Verifier {
	if now == nil {
		now = time.Now
	}
	return &Verifier{Audience: audience, dir: localDirectory{keys: keys}, now: now, seen: map[string]time.Time{}}
}

// LooksLikeServiceToken reports whether tok is a JWT whose header names an
// asymmetric algorithm, the shape of service tokens (session tokens are
// HS256). It decides which verifier a bearer token goes to; it proves
// nothing by itself.
func LooksLikeServiceToken(tok string) bool {
	h, _, ok := strings.Cut(tok, ".")
	if !ok {
		return false
	}
	raw, err := base64.RawURLEncoding.DecodeString(h)
	if err != nil {
		return false
	}
	var hdr struct {
		Alg string `json:"alg"`
	}
	if json.Unmarshal(raw, &hdr) != nil {
		return false
	}
	return hdr.Alg == "ES256K" || hdr.Alg == "ES256"
}

// claims are the parts of a service token checked here, read before the
// signature check only to route errors; nothing unverified is trusted.
type claims struct {
	Issuer string `json:"iss"`
	Aud    any    `json:"aud"`
	Exp    int64  `json:"exp"`
	JTI    string `json:"jti"`
	LXM    string `json:"lxm"`
}

// Verify checks tok for a call of method lxm and returns the issuing
// account. It refuses session-typed tokens, a missing or reused jti, a
// wrong audience or method, an expired token and a bad signature, each
// with a 401 error naming the reason.
func (v *Verifier) Verify(ctx context.Context, tok string, lxm syntax.NSID) (syntax.DID, error) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return "", pdserr.New(BadJwt, "Poorly formatted jwt")
	}
	hb, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return "", pdserr.New(BadJwt, "Poorly formatted jwt")
	}
	var hdr struct {
		Typ string `json:"typ"`
	}
	if json.Unmarshal(hb, &hdr) != nil {
		return "", pdserr.New(BadJwt, "Poorly formatted jwt")
	}
	switch hdr.Typ {
	case "at+jwt", "refresh+jwt", "dpop+jwt":
		return "", pdserr.New(BadJwtType, "Invalid jwt type %q", hdr.Typ)
	}
	pb, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", pdserr.New(BadJwt, "Poorly formatted jwt")
	}
	var c claims
	if json.Unmarshal(pb, &c) != nil {
		return "", pdserr.New(BadJwt, "Poorly formatted jwt")
	}
	if c.JTI == "" {
		return "", pdserr.New(BadJwt, "jwt has no jti")
	}
	if c.LXM != lxm.String() {
		return "", pdserr.New(BadJwtLexiconMethod, "bad jwt lexicon method (\"lxm\"); must match: %s", lxm)
	}
	val := atauth.ServiceAuthValidator{Audience: v.Audience, Dir: v.dir, TimestampLeeway: leeway}
	iss, err := val.Validate(ctx, tok, &lxm)
	switch {
	case err == nil:
	case errors.Is(err, jwt.ErrTokenExpired):
		return "", pdserr.New(JwtExpired, "jwt expired")
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return "", pdserr.New(BadJwtAudience, "jwt audience does not match service did")
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return "", pdserr.Wrap(err, BadJwtIss, "jwt issuer is not an account hosted here")
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return "", pdserr.New(BadJwtSignature, "jwt signature does not match jwt issuer")
	default:
		return "", pdserr.Wrap(err, BadJwt, "jwt could not be verified")
	}
	if err := v.consume(c.JTI, time.Unix(c.Exp, 0)); err != nil {
		return "", err
	}
	return iss, nil
}

// consume records jti as used until exp (plus the leeway, after which the
// token is refused as expired anyway) and refuses one seen before.
func (v *Verifier) consume(jti string, exp time.Time) error {
	now := v.now()
	v.mu.Lock()
	defer v.mu.Unlock()
	for k, until := range v.seen {
		if now.After(until) {
			delete(v.seen, k)
		}
	}
	if _, ok := v.seen[jti]; ok {
		return pdserr.New(JwtReplayed, "jwt has already been used")
	}
	// Bound the cache by the longest lifetime accepted at mint time, so a
	// token claiming a far-future exp cannot pin memory forever.
	if max := now.Add(MaxTTL + leeway); exp.After(max) {
		exp = max
	}
	v.seen[jti] = exp.Add(leeway)
	return nil
}

// localDirectory is an identity.Directory that knows only the hosted
// accounts' signing keys.
type localDirectory struct{ keys PublicKeys }

var errNotHosted = errors.New("not an account hosted here")

func (d localDirectory) LookupDID(ctx context.Context, did syntax.DID) (*identity.Identity, error) {
	pub, err := d.keys(ctx, did)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errNotHosted, err)
	}
	return &identity.Identity{
		DID:    did,
		Handle: syntax.HandleInvalid,
		Keys:   map[string]identity.VerificationMethod{"atproto": {Type: "Multikey", PublicKeyMultibase: pub.Multibase()}},
	}, nil
}

func (d localDirectory) LookupHandle(context.Context, syntax.Handle) (*identity.Identity, error) {
	return nil, errNotHosted
}

func (d localDirectory) Lookup(ctx context.Context, a syntax.AtIdentifier) (*identity.Identity, error) {
	if did, err := a.AsDID(); err == nil {
		return d.LookupDID(ctx, did)
	}
	return nil, errNotHosted
}

func (d localDirectory) Purge(context.Context, syntax.AtIdentifier) error { return nil }
