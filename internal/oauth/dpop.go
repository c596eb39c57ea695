package oauth

import (
	"crypto"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
)

// DPoP limits (RFC 9449). A proof's iat may be off by proofSkew either way;
// its jti is remembered for longer than that, so a proof can never be
// replayed while it would still be accepted.
const (
	maxProofBytes = 8 << 10
	proofSkew     = 3 * time.Minute
	jtiTTL        = 2*proofSkew + time.Minute
	// nonceStep is how often the server nonce changes. The previous, the
	// current and the next nonce are accepted, so a nonce lives at most
	// three steps (the spec's limit is 5 minutes).
	nonceStep = time.Minute
	// maxReplayEntries bounds the replay cache; past it new proofs are
	// refused until old entries expire, rather than growing without bound.
	maxReplayEntries = 200_000
)

// Proof is a verified DPoP proof.
type Proof struct {
	JTI   string
	HTM   string
	HTU   string
	IAT   time.Time
	ATH   string
	Nonce string
	// JKT is the RFC 7638 SHA-256 thumbprint of the proof's key, base64url.
	JKT string
}

type proofClaims struct {
	JTI   any `json:"jti"`
	HTM   any `json:"htm"`
	HTU   any `json:"htu"`
	IAT   any `json:"iat"`
	ATH   any `json:"ath"`
	Nonce any `json:"nonce"`
}

// ParseProof checks a DPoP proof's form and signature: a compact JWS with
// typ dpop+jwt, alg ES256, an embedded public JWK that verifies the
// signature, and string jti, htm, htu and a numeric iat. It does not check
// the claims against a request; see Provider.checkDPoP.
func ParseProof(raw string) (*Proof, error) {
	if raw == "" || len(raw) > maxProofBytes || strings.Count(raw, ".") != 2 {
		return nil, errors.New("DPoP proof is not a compact JWT")
	}
	msg, err := jws.ParseString(raw)
	if err != nil {
		return nil, fmt.Errorf("DPoP proof is not a JWT: %w", err)
	}
	sigs := msg.Signatures()
	if len(sigs) != 1 {
		return nil, errors.New("DPoP proof must have one signature")
	}
	h := sigs[0].ProtectedHeaders()
	if typ, _ := h.Type(); typ != "dpop+jwt" {
		return nil, errors.New(`DPoP proof typ must be "dpop+jwt"`)
	}
	if alg, _ := h.Algorithm(); alg != jwa.ES256() {
		return nil, errors.New("DPoP proof alg must be ES256")
	}
	key, ok := h.JWK()
	if !ok || key == nil {
		return nil, errors.New("DPoP proof has no jwk header")
	}
	if private, err := jwk.IsPrivateKey(key); err != nil || private {
		return nil, errors.New("DPoP proof jwk must be a public key")
	}
	payload, err := jws.Verify([]byte(raw), jws.WithKey(jwa.ES256(), key))
	if err != nil {
		return nil, errors.New("DPoP proof signature does not verify")
	}
	var c proofClaims
	if err := json.Unmarshal(payload, &c); err != nil {
		return nil, errors.New("DPoP proof claims are not a JSON object")
	}
	p := &Proof{}
	var okStr bool
	if p.JTI, okStr = c.JTI.(string); !okStr || p.JTI == "" || len(p.JTI) > 256 {
		return nil, errors.New("DPoP proof needs a jti")
	}
	if p.HTM, okStr = c.HTM.(string); !okStr || p.HTM == "" {
		return nil, errors.New("DPoP proof needs htm")
	}
	if p.HTU, okStr = c.HTU.(string); !okStr || p.HTU == "" {
		return nil, errors.New("DPoP proof needs htu")
	}
	iat, okNum := c.IAT.(float64)
	if !okNum || math.IsNaN(iat) || iat < 0 || iat > 1e11 {
		return nil, errors.New("DPoP proof needs a numeric iat")
	}
	p.IAT = time.Unix(int64(iat), 0)
	if c.ATH != nil {
		if p.ATH, okStr = c.ATH.(string); !okStr {
			return nil, errors.New("DPoP proof ath must be a string")
		}
	}
	if c.Nonce != nil {
		if p.Nonce, okStr = c.Nonce.(string); !okStr {
			return nil, errors.New("DPoP proof nonce must be a string")
		}
	}
	if p.JKT, err = thumbprint(key); err != nil {
		return nil, err
	}
	return p, nil
}

func thumbprint(key jwk.Key) (string, error) {
	tp, err := key.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", errors.New("cannot compute the key's thumbprint")
	}
	return base64.RawURLEncoding.EncodeToString(tp), nil
}

// normalizeHTU reduces a URL to scheme://host/path, the parts a DPoP proof
// binds (RFC 9449 §4.3: query and fragment are ignored).
func normalizeHTU(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil || u.User != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return "", errors.New("htu is not an http(s) URL")
	}
	p := u.EscapedPath()
	if p == "" {
		p = "/"
	}
	return strings.ToLower(u.Scheme) + "://" + strings.ToLower(u.Host) + p, nil
}

// dpopError is a refused DPoP proof: code is use_dpop_nonce (the client
// must retry with the nonce in the DPoP-Nonce header) or invalid_dpop_proof.
type dpopError struct {
	code string
	msg  string
}

func (e *dpopError) Error() string { return e.code + ": " + e.msg }

func invalidProof(format string, args ...any) *dpopError {
	return &dpopError{code: "invalid_dpop_proof", msg: fmt.Sprintf(format, args...)}
}

// nonces issues and checks server DPoP nonces: an HMAC of the current time
// step under a per-process secret, so no state is kept and every
// instance of the clock agrees.
type nonces struct {
	secret []byte
	now    func() time.Time
}

func (n *nonces) at(step int64) string {
	m := hmac.New(sha256.New, n.secret)
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(step))
	m.Write(b[:])
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil)[:18])
}

func (n *nonces) step() int64 { return n.now().Unix() / int64(nonceStep/time.Second) }

// current returns the nonce to send now.
func (n *nonces) current() string { return n.at(n.step()) }

// valid accepts the previous, current and next nonces.
func (n *nonces) valid(s string) bool {
	st := n.step()
	ok := 0
	for _, d := range []int64{-1, 0, 1} {
		ok |= subtle.ConstantTimeCompare([]byte(s), []byte(n.at(st+d)))
	}
	return ok == 1
}

// replayCache remembers proof and assertion jtis until they could no
// longer be accepted. It lives in memory: after a restart the nonce secret
// is new, so proofs made before it are refused anyway.
type replayCache struct {
	mu   sync.Mutex
	seen map[string]time.Time
	now  func() time.Time
}

// add records key until ttl from now; it reports false if key was already
// recorded (a replay) or the cache is full.
func (c *replayCache) add(key string, ttl time.Duration) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if exp, ok := c.seen[key]; ok && now.Before(exp) {
		return false
	}
	if len(c.seen) >= maxReplayEntries {
		for k, exp := range c.seen {
			if !now.Before(exp) {
				delete(c.seen, k)
			}
		}
		if len(c.seen) >= maxReplayEntries {
			return false
		}
	}
	c.seen[key] = now.Add(ttl)
	return true
}

// accessTokenHash is the ath claim of a proof sent with token.
func accessTokenHash(token string) string {
	h := sha256.Sum256([]byte(token))
	return base64.RawURLEncoding.EncodeToString(h[:])
}

// checkDPoP verifies the request's DPoP proof: exactly one DPoP header, a
// valid signature, htm equal to the request method, htu equal to the
// public URL of the request path (never the Host header), iat within the
// allowed skew, a current server nonce, ath bound to accessToken (and
// absent when accessToken is empty), and a jti never seen before.
func (p *Provider) checkDPoP(r *http.Request, accessToken string) (*Proof, error) {
	vals := r.Header.Values("DPoP")
	if len(vals) != 1 || vals[0] == "" {
		return nil, invalidProof("exactly one DPoP header is required")
	}
	proof, err := ParseProof(vals[0])
	if err != nil {
		return nil, invalidProof("%v", err)
	}
	if proof.HTM != r.Method {
		return nil, invalidProof("htm does not match the request method")
	}
	htu, err := normalizeHTU(proof.HTU)
	if err != nil {
		return nil, invalidProof("%v", err)
	}
	if htu != p.publicHTU(r.URL.EscapedPath()) {
		return nil, invalidProof("htu does not match the request URL")
	}
	now := p.now()
	if proof.IAT.Before(now.Add(-proofSkew)) || proof.IAT.After(now.Add(proofSkew)) {
		return nil, invalidProof("iat is too far from the server's time")
	}
	if accessToken == "" {
		if proof.ATH != "" {
			return nil, invalidProof("ath is not expected here")
		}
	} else if subtle.ConstantTimeCompare([]byte(proof.ATH), []byte(accessTokenHash(accessToken))) != 1 {
		return nil, invalidProof("ath does not match the access token")
	}
	if proof.Nonce == "" || !p.nonces.valid(proof.Nonce) {
		return nil, &dpopError{code: "use_dpop_nonce", msg: "Authorization server requires nonce in DPoP proof"}
	}
	if !p.replay.add("dpop:"+proof.JKT+":"+proof.JTI, jtiTTL) {
		return nil, invalidProof("DPoP proof replayed")
	}
	return proof, nil
}

// publicHTU is the normalized URL of path on the public origin.
func (p *Provider) publicHTU(path string) string {
	if path == "" {
		path = "/"
	}
	n, err := normalizeHTU(p.issuer + path)
	if err != nil {
		return ""
	}
	return n
}
