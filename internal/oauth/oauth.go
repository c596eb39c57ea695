// Package oauth is the server's OAuth 2.1 authorization server, following
// the atproto OAuth profile: client metadata documents as client ids,
// pushed authorization requests (RFC 9126), PKCE S256 (RFC 7636),
// DPoP-bound tokens with server nonces (RFC 9449), server metadata
// (RFC 8414), a consent page, token rotation and revocation. It also
// verifies the DPoP-bound access tokens it issued for the XRPC resource
// server (VerifyAccess).
//
// The issuer is the server's one public URL, used verbatim everywhere;
// DPoP htu claims are checked against it, never against the Host header,
// so the server works behind a reverse proxy.
package oauth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"stratus/internal/account"
	"stratus/internal/safehttp"
	"stratus/internal/scope"
)

// Lifetimes. Access tokens are checked against their grant on every
// request, so revoking a grant ends them at once; they are still kept
// short, as the spec asks (under 30 minutes). Public clients get the
// spec's limits for untrusted clients: a refresh token lives a day and
// the whole session a week. Confidential clients' refresh tokens live 90
// days (the spec allows up to 180) and their sessions are not capped.
const (
	RequestTTL              = 5 * time.Minute
	CodeTTL                 = time.Minute
	AccessTTL               = 15 * time.Minute
	PublicRefreshTTL        = 24 * time.Hour
	PublicSessionTTL        = 7 * 24 * time.Hour
	ConfidentialRefreshTTL  = 90 * 24 * time.Hour
	challengeReuseWindow    = 24 * time.Hour
	requestURIPrefix        = "urn:ietf:params:oauth:request_uri:"
	maxFormBytes            = 64 << 10
	authMethodNone          = "none"
	authMethodPrivateKeyJWT = "private_key_jwt"
)

// Accounts is what the provider needs from the account service.
type Accounts interface {
	Resolve(ctx context.Context, id string) (account.Account, error)
	Get(ctx context.Context, did syntax.DID) (account.Account, error)
}

// Passwords reads account password hashes. App passwords are never
// consulted: OAuth sign-in takes the account password only.
type Passwords interface {
	PasswordHash(ctx context.Context, did syntax.DID) (string, error)
}

// Config configures a Provider.
type Config struct {
	// Issuer is the server's public URL (https://host[:port], no path).
	Issuer    string
	Store     Store
	Accounts  Accounts
	Passwords Passwords
	// Fetch configures the client that fetches client metadata and
	// jwks_uri documents. The zero value is the strict default (https,
	// public addresses only); tests relax it.
	Fetch  safehttp.Options
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Provider is the authorization server.
type Provider struct {
	issuer    string
	store     Store
	accounts  Accounts
	passwords Passwords
	fetchOpts safehttp.Options
	fetch     *http.Client
	log       *slog.Logger
	now       func() time.Time
	nonces    *nonces
	replay    *replayCache
	csrfKey   []byte
	clients   *clientCache
	// limitLogin counts a sign-in attempt on the consent page; set by
	// Routes.
	limitLogin func(w http.ResponseWriter, r *http.Request, identifier string) error
	dummyOnce  sync.Once
	dummyHash  string
}

// New returns a provider.
func New(cfg Config) (*Provider, error) {
	issuer := strings.TrimSuffix(cfg.Issuer, "/")
	if issuer == "" || cfg.Store == nil || cfg.Accounts == nil || cfg.Passwords == nil {
		return nil, fmt.Errorf("oauth: issuer, store, accounts and passwords are required")
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	fetchOpts := cfg.Fetch
	fetchOpts.MaxRedirects = -1 // metadata must answer 200 itself
	return &Provider{
		issuer:    issuer,
		store:     cfg.Store,
		accounts:  cfg.Accounts,
		passwords: cfg.Passwords,
		fetchOpts: fetchOpts,
		fetch:     safehttp.NewClient(fetchOpts),
		log:       log,
		now:       now,
		nonces:    &nonces{secret: randomBytes(32), now: now},
		replay:    &replayCache{seen: map[string]time.Time{}, now: now},
		csrfKey:   randomBytes(32),
		clients:   &clientCache{entries: map[string]clientEntry{}},
	}, nil
}

// Issuer returns the issuer identifier.
func (p *Provider) Issuer() string { return p.issuer }

// DPoPNonce returns the server nonce to send in DPoP-Nonce headers.
func (p *Provider) DPoPNonce() string { return p.nonces.current() }

// Routes registers the OAuth endpoints on mux. limitLogin is the
// server's sign-in rate limiter, applied to consent-page sign-ins too.
func (p *Provider) Routes(mux *http.ServeMux, limitLogin func(w http.ResponseWriter, r *http.Request, identifier string) error) {
	p.limitLogin = limitLogin
	mux.HandleFunc("GET /.well-known/oauth-authorization-server", p.handleServerMetadata)
	mux.HandleFunc("GET /.well-known/oauth-protected-resource", p.handleResourceMetadata)
	mux.HandleFunc("GET /oauth/jwks", p.handleJWKS)
	mux.HandleFunc("POST /oauth/par", p.handlePAR)
	mux.HandleFunc("GET /oauth/authorize", p.handleAuthorize)
	mux.HandleFunc("POST /oauth/authorize", p.handleAuthorizeSubmit)
	mux.HandleFunc("POST /oauth/token", p.handleToken)
	mux.HandleFunc("POST /oauth/revoke", p.handleRevoke)
	mux.HandleFunc("GET /oauth/userinfo", p.handleUserinfo)
}

// ScopesSupported are the scopes advertised in the server metadata.
var ScopesSupported = []string{scope.Atproto, scope.TransitionGeneric, scope.TransitionEmail, scope.TransitionChat,
	"repo", "blob", "rpc", "account", "identity"}

func (p *Provider) handleServerMetadata(w http.ResponseWriter, _ *http.Request) {
	writeMetadata(w, map[string]any{
		"issuer":                                           p.issuer,
		"authorization_endpoint":                           p.issuer + "/oauth/authorize",
		"token_endpoint":                                   p.issuer + "/oauth/token",
		"pushed_authorization_request_endpoint":            p.issuer + "/oauth/par",
		"revocation_endpoint":                              p.issuer + "/oauth/revoke",
		"userinfo_endpoint":                                p.issuer + "/oauth/userinfo",
		"jwks_uri":                                         p.issuer + "/oauth/jwks",
		"require_pushed_authorization_requests":            true,
		"response_types_supported":                         []string{"code"},
		"response_modes_supported":                         []string{"query", "fragment"},
		"grant_types_supported":                            []string{"authorization_code", "refresh_token"},
		"code_challenge_methods_supported":                 []string{"S256"},
		"token_endpoint_auth_methods_supported":            []string{authMethodNone, authMethodPrivateKeyJWT},
		"token_endpoint_auth_signing_alg_values_supported": []string{"ES256"},
		"revocation_endpoint_auth_methods_supported":       []string{authMethodNone, authMethodPrivateKeyJWT},
		"dpop_signing_alg_values_supported":                []string{"ES256"},
		"scopes_supported":                                 ScopesSupported,
		"subject_types_supported":                          []string{"public"},
		"authorization_response_iss_parameter_supported":   true,
		"client_id_metadata_document_supported":            true,
		"request_parameter_supported":                      false,
		"request_uri_parameter_supported":                  true,
		"require_request_uri_registration":                 true,
		"prompt_values_supported":                          []string{"none", "login", "consent", "select_account"},
		"ui_locales_supported":                             []string{"en"},
		"protected_resources":                              []string{p.issuer},
	})
}

func (p *Provider) handleResourceMetadata(w http.ResponseWriter, _ *http.Request) {
	writeMetadata(w, map[string]any{
		"resource":                 p.issuer,
		"authorization_servers":    []string{p.issuer},
		"scopes_supported":         ScopesSupported,
		"bearer_methods_supported": []string{"header"},
		"resource_documentation":   "https://atproto.com",
	})
}

// handleJWKS serves the server's signing keys: none, since its tokens are
// opaque and checked against storage. The document exists for clients
// that fetch it regardless.
func (p *Provider) handleJWKS(w http.ResponseWriter, _ *http.Request) {
	writeMetadata(w, map[string]any{"keys": []any{}})
}

func writeMetadata(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "max-age=300")
	json.NewEncoder(w).Encode(v)
}

// oauthError is an error answer of the OAuth endpoints (RFC 6749 §5.2).
type oauthError struct {
	status int
	code   string
	desc   string
}

func (e *oauthError) Error() string { return e.code + ": " + e.desc }

func errorf(code, format string, args ...any) *oauthError {
	status := http.StatusBadRequest
	if code == "invalid_client" {
		status = http.StatusUnauthorized
	}
	return &oauthError{status: status, code: code, desc: fmt.Sprintf(format, args...)}
}

// writeError sends err as an OAuth error. DPoP errors keep their code;
// anything unnamed is logged and reported as server_error.
func (p *Provider) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var oe *oauthError
	switch e := err.(type) {
	case *oauthError:
		oe = e
	case *dpopError:
		oe = &oauthError{status: http.StatusBadRequest, code: e.code, desc: e.msg}
	default:
		p.log.ErrorContext(r.Context(), "oauth request failed", "path", r.URL.Path, "err", err)
		oe = &oauthError{status: http.StatusInternalServerError, code: "server_error", desc: "Internal Server Error"}
	}
	if oe.code == "use_dpop_nonce" {
		w.Header().Set("WWW-Authenticate", `DPoP error="use_dpop_nonce", error_description="Authorization server requires nonce in DPoP proof"`)
	}
	p.writeJSON(w, oe.status, map[string]string{"error": oe.code, "error_description": oe.desc})
}

func (p *Provider) writeJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	h.Set("DPoP-Nonce", p.nonces.current())
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// parseForm reads a form-encoded POST body of bounded size. Parameters
// given twice are refused, as RFC 6749 §3.1 requires.
func parseForm(w http.ResponseWriter, r *http.Request) error {
	mt := strings.TrimSpace(strings.ToLower(strings.Split(r.Header.Get("Content-Type"), ";")[0]))
	if mt != "application/x-www-form-urlencoded" {
		return errorf("invalid_request", "request body must be application/x-www-form-urlencoded")
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		return errorf("invalid_request", "request body could not be parsed")
	}
	for k, v := range r.PostForm {
		if len(v) > 1 {
			return errorf("invalid_request", "parameter %q given more than once", k)
		}
	}
	return nil
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// randomToken returns prefix followed by 32 random bytes, base64url.
func randomToken(prefix string) string {
	return prefix + base64.RawURLEncoding.EncodeToString(randomBytes(32))
}

// hashToken is how tokens and codes are stored and looked up.
func hashToken(tok string) string {
	h := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(h[:])
}

// Prune deletes expired requests and grants.
func (p *Provider) Prune(ctx context.Context) error { return p.store.Prune(ctx, p.now()) }
