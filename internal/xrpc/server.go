// Package xrpc is the HTTP transport of the server: it decodes requests,
// authenticates them, calls one domain function per method, and encodes
// the result or maps the error to an XRPC error envelope. No protocol logic
// lives here.
package xrpc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/syntax"

	"stratus/internal/account"
	"stratus/internal/auth"
	"stratus/internal/blob"
	"stratus/internal/idops"
	"stratus/internal/migration"
	"stratus/internal/oauth"
	"stratus/internal/pdserr"
	"stratus/internal/prefs"
	"stratus/internal/proxy"
	"stratus/internal/ratelimit"
	"stratus/internal/readafter"
	"stratus/internal/repo"
	"stratus/internal/sequencer"
	"stratus/internal/serviceauth"
	"stratus/internal/status"
)

// Body size limits. Repository writes may carry up to 200 records; other
// JSON inputs are small.
const (
	defaultBodyLimit = 150 << 10
	writeBodyLimit   = 4 << 20
)

// Deps are the domain services and settings the transport needs.
type Deps struct {
	Repos    *repo.Service
	Accounts *account.Service
	// Blobs stores and serves blobs; nil answers uploads with
	// ServiceUnavailable.
	Blobs    *blob.Service
	Auth     *auth.Verifier
	Sessions *auth.Sessions
	// Hub streams the firehose.
	Hub *sequencer.Hub
	// Operator performs the operator's secret rotations.
	Operator Operator
	// PublicURL is the server's one public origin.
	PublicURL string
	// Hostname gives the server's own DID, did:web:<hostname>.
	Hostname string
	// SigningKey returns the public key of an account's signing key, for
	// DID documents.
	SigningKey func(ctx context.Context, did syntax.DID) (atcrypto.PublicKey, error)
	// HandleCheck reports whether a handle resolves to the DID (for
	// describeRepo's handleIsCorrect). Nil means "trust the local record".
	HandleCheck func(ctx context.Context, handle syntax.Handle, did syntax.DID) bool
	// PrimaryDID is the account served for the server's own hostname at
	// /.well-known/atproto-did.
	PrimaryDID syntax.DID
	Version    string
	Links      Links
	// UserDomains are the handle suffixes describeServer offers.
	UserDomains []string
	Logger      *slog.Logger
	// Ping checks storage for the health endpoint.
	Ping func(ctx context.Context) error
	// TrustedProxies are the peers whose X-Forwarded-For names the client.
	TrustedProxies []netip.Prefix
	// RateLimitBypass exempts requests that send it as x-ratelimit-bypass.
	RateLimitBypass string
	// Now is the clock of the rate limiters; nil means time.Now.
	Now func() time.Time

	// Proxy forwards the methods not served here (nil: they answer 501).
	Proxy *proxy.Service
	// Signer mints service JWTs (getServiceAuth).
	Signer *serviceauth.Signer
	// ServiceAuth verifies inbound service JWTs (the authService level).
	ServiceAuth *serviceauth.Verifier
	// Prefs keeps account preferences.
	Prefs *prefs.Service
	// RecordsSince finds records newer than an AppView's revision, for
	// read-after-write; nil turns merging off.
	RecordsSince readafter.Store
	// Identity performs handle and PLC operations.
	Identity *idops.Service
	// BlobCounts reports how many blobs an account's records reference
	// and how many of those are stored, for checkAccountStatus. Nil
	// reports zero for both.
	BlobCounts func(ctx context.Context, did syntax.DID) (expected, imported int64, err error)
	// ValidDID reports whether an account's DID document names this
	// server (checkAccountStatus); nil reports true.
	ValidDID func(ctx context.Context, did syntax.DID) bool
	// OAuth is the OAuth authorization server; nil disables OAuth.
	OAuth *oauth.Provider
	// Migration serves createAccount for an account moving here and
	// importRepo; nil refuses both.
	Migration *migration.Service
	// Status assembles the operator's status report
	// (app.stratus.admin.getStatus); nil answers ServiceUnavailable.
	Status func(ctx context.Context) (*status.Report, error)
}

// Operator performs the operator's secret rotations; internal/server
// implements it because it owns the configuration files.
type Operator interface {
	RotateJWTSecret(ctx context.Context) (*Rotation, error)
	SetPassword(ctx context.Context, password string) (*Rotation, error)
	RotateAdminToken(ctx context.Context) (*Rotation, error)
	RotateSigningKey(ctx context.Context) (*KeyRotation, error)
	EmitIdentity(ctx context.Context) (seq int64, err error)
}

// Rotation is the answer of a secret rotation. Warning is set when a flag
// or environment variable overrides the saved secret, so the change would
// not survive a restart.
type Rotation struct {
	SessionsEnded *int   `json:"sessionsEnded,omitempty"`
	Password      string `json:"password,omitempty"`
	AdminToken    string `json:"adminToken,omitempty"`
	Warning       string `json:"warning,omitempty"`
}

// KeyRotation is the answer of a signing-key rotation.
type KeyRotation struct {
	DID              string   `json:"did"`
	SigningKeyPublic string   `json:"signingKeyPublic"`
	Method           string   `json:"didMethod"`
	FollowUp         []string `json:"followUp,omitempty"`
	Warning          string   `json:"warning,omitempty"`
}

// Links are the operator links describeServer reports.
type Links struct {
	PrivacyPolicy  string
	TermsOfService string
	ContactEmail   string
}

// authLevel says what credential a method needs.
type authLevel int

const (
	authNone     authLevel = iota
	authRequired           // any authenticated principal
	// authOwner excludes app-password sessions: the methods only the
	// account owner may call. This is the one place that rule is enforced.
	authOwner
	authAdmin   // the operator's admin token only
	authRefresh // a refresh token, checked by the handler
	// authService accepts what authRequired accepts or a service JWT that
	// a hosted account signed for this server and this very method (for
	// example a video service uploading a blob on the account's behalf).
	authService
)

// handlerFunc serves one XRPC method. p is nil for unauthenticated methods.
type handlerFunc func(w http.ResponseWriter, r *http.Request, p *auth.Principal) error

// route is one XRPC method.
type route struct {
	method    string // GET (query) or POST (procedure)
	auth      authLevel
	bodyLimit int64
	handle    handlerFunc

	// streamsBody marks a procedure that reads its body as a stream and
	// enforces its own size limit (uploadBlob), so dispatch leaves the
	// body alone.
	streamsBody bool
}

// Server is the HTTP front of the PDS.
type Server struct {
	deps   Deps
	log    *slog.Logger
	routes map[string]route
	mux    *http.ServeMux
	// logins limits createSession per identifier and client address, as
	// the reference PDS does: 30 per 5 minutes and 300 per day.
	logins *ratelimit.Limiter
}

// New builds the server's handler.
func New(deps Deps) *Server {
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	s := &Server{deps: deps, log: deps.Logger, mux: http.NewServeMux(),
		logins: ratelimit.New([]ratelimit.Window{{Limit: 30, Period: 5 * time.Minute}, {Limit: 300, Period: 24 * time.Hour}}, deps.Now)}
	s.routes = s.xrpcRoutes()
	s.mux.HandleFunc("/xrpc/{nsid}", s.dispatch)
	s.mux.HandleFunc("GET /xrpc/_health", s.handleHealth)
	s.mux.HandleFunc("GET /.well-known/did.json", s.handleDIDDocument)
	s.mux.HandleFunc("GET /.well-known/atproto-did", s.handleAtprotoDID)
	s.mux.HandleFunc("GET /robots.txt", s.handleRobots)
	s.mux.HandleFunc("GET /{$}", s.handleHome)
	if deps.OAuth != nil {
		deps.OAuth.Routes(s.mux, s.limitLogin)
	}
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, r, s.log, pdserr.New(pdserr.NotFound, "Not Found"))
	})
	return s
}

// ServeHTTP implements http.Handler with the middleware every request gets:
// panic recovery, CORS, and no caching of API answers by default.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			s.log.ErrorContext(r.Context(), "panic serving request", "path", r.URL.Path, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			writeError(w, r, s.log, pdserr.New(pdserr.InternalServerError, "Internal Server Error"))
		}
	}()
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", "*")
	// Browser OAuth clients must read the DPoP nonce and challenges.
	h.Set("Access-Control-Expose-Headers", "DPoP-Nonce, WWW-Authenticate")
	if s.deps.OAuth != nil && r.Header.Get("DPoP") != "" {
		h.Set("DPoP-Nonce", s.deps.OAuth.DPoPNonce())
	}
	if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
		h.Set("Access-Control-Allow-Methods", "GET,HEAD,PUT,PATCH,POST,DELETE")
		if req := r.Header.Get("Access-Control-Request-Headers"); req != "" {
			h.Set("Access-Control-Allow-Headers", req)
			h.Add("Vary", "Access-Control-Request-Headers")
		}
		h.Set("Access-Control-Max-Age", "86400")
		h.Set("Content-Length", "0")
		w.WriteHeader(http.StatusNoContent)
		return
	}
	s.mux.ServeHTTP(w, r)
}

// dispatch routes /xrpc/<nsid> through the method table. It is the single
// place that answers unknown methods (501) and wrong verbs (405).
func (s *Server) dispatch(w http.ResponseWriter, r *http.Request) {
	nsid := r.PathValue("nsid")
	rt, ok := s.routes[nsid]
	if nsid == "_health" {
		// Served by its own GET route; any other verb lands here.
		w.Header().Set("Allow", http.MethodGet)
		writeError(w, r, s.log, pdserr.New(pdserr.MethodNotAllowed, "Incorrect HTTP method (%s) for _health, expected GET", r.Method))
		return
	}
	if !ok {
		if _, err := syntax.ParseNSID(nsid); err != nil {
			writeError(w, r, s.log, pdserr.New(pdserr.InvalidRequest, "invalid xrpc path"))
			return
		}
		if err := s.forward(w, r, nsid); err != nil {
			writeError(w, r, s.log, err)
		}
		return
	}
	method := r.Method
	if method == http.MethodHead {
		method = http.MethodGet
	}
	if method != rt.method {
		w.Header().Set("Allow", rt.method)
		writeError(w, r, s.log, pdserr.New(pdserr.MethodNotAllowed, "Incorrect HTTP method (%s) for %s, expected %s", r.Method, nsid, rt.method))
		return
	}
	var p *auth.Principal
	switch rt.auth {
	case authRequired, authOwner, authAdmin, authService:
		var err error
		if rt.auth == authService {
			p, err = s.authenticateService(r, nsid)
		} else {
			p, err = s.deps.Auth.Authenticate(r)
		}
		if err != nil {
			writeError(w, r, s.log, err)
			return
		}
		if p.Kind == auth.OAuth {
			limit := rt.bodyLimit
			if limit == 0 {
				limit = defaultBodyLimit
			}
			if err := s.authorizeOAuth(w, r, nsid, limit, p); err != nil {
				writeError(w, r, s.log, err)
				return
			}
		}
		if rt.auth == authOwner && !p.Owner() {
			writeError(w, r, s.log, pdserr.New(pdserr.InvalidToken, "Bad token scope: app passwords cannot call %s", nsid))
			return
		}
		if rt.auth == authAdmin && p.Kind != auth.Admin {
			writeError(w, r, s.log, pdserr.New(pdserr.Forbidden, "%s needs the admin token", nsid))
			return
		}
	}
	if rt.method == http.MethodPost && !rt.streamsBody {
		limit := rt.bodyLimit
		if limit == 0 {
			limit = defaultBodyLimit
		}
		if r.ContentLength > limit {
			writeError(w, r, s.log, pdserr.New(pdserr.PayloadTooLarge, "request entity too large"))
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, limit)
	}
	if err := rt.handle(w, r, p); err != nil {
		writeError(w, r, s.log, err)
	}
}

// writeJSON sends a 200 JSON answer.
func writeJSON(w http.ResponseWriter, v any) error {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if err := json.NewEncoder(w).Encode(v); err != nil {
		return errClientGone
	}
	return nil
}

// decodeJSON reads a JSON procedure input into v. Malformed JSON, wrong
// types and oversized bodies become XRPC errors that name the problem.
func decodeJSON(r *http.Request, v any) error {
	ct := r.Header.Get("Content-Type")
	if mt, _, _ := strings.Cut(ct, ";"); strings.TrimSpace(strings.ToLower(mt)) != "application/json" {
		return pdserr.New(pdserr.InvalidRequest, "Wrong request encoding (Content-Type): %q, expected application/json", ct)
	}
	dec := json.NewDecoder(r.Body)
	if err := dec.Decode(v); err != nil {
		var maxErr *http.MaxBytesError
		var typeErr *json.UnmarshalTypeError
		var syntaxErr *json.SyntaxError
		switch {
		case errors.As(err, &maxErr):
			return pdserr.New(pdserr.PayloadTooLarge, "request entity too large")
		case errors.As(err, &typeErr):
			field := typeErr.Field
			if field == "" {
				return pdserr.New(pdserr.InvalidRequest, "Input must be an object")
			}
			return pdserr.New(pdserr.InvalidRequest, "Input/%s must be %s", strings.ReplaceAll(field, ".", "/"), jsonKind(typeErr.Type.Kind().String()))
		case errors.As(err, &syntaxErr), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
			return pdserr.New(pdserr.InvalidRequest, "Request body is not valid JSON")
		default:
			return pdserr.New(pdserr.InvalidRequest, "Request body is not valid JSON: %v", err)
		}
	}
	if dec.More() {
		return pdserr.New(pdserr.InvalidRequest, "Request body has trailing data after the JSON value")
	}
	return nil
}

func jsonKind(k string) string {
	switch k {
	case "bool":
		return "a boolean"
	case "string":
		return "a string"
	case "slice":
		return "an array"
	case "map", "struct", "ptr":
		return "an object"
	case "int", "int64", "float64":
		return "a number"
	}
	return "of a different type"
}

// Query parameter helpers.

// queryValue returns one query parameter. The query of a GET is parsed
// once per request (into r.Form, which for a GET holds only the URL's
// query) rather than once per parameter.
func queryValue(r *http.Request, name string) string {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return r.URL.Query().Get(name)
	}
	if r.Form == nil {
		_ = r.ParseForm() // a malformed pair is skipped, as URL.Query does
	}
	return r.Form.Get(name)
}

func queryString(r *http.Request, name string, required bool) (string, error) {
	v := queryValue(r, name)
	if v == "" && required {
		return "", pdserr.New(pdserr.InvalidRequest, "Error: Params must have the property %q", name)
	}
	return v, nil
}

func queryDID(r *http.Request, name string) (syntax.DID, error) {
	v, err := queryString(r, name, true)
	if err != nil {
		return "", err
	}
	did, err := syntax.ParseDID(v)
	if err != nil {
		return "", pdserr.New(pdserr.InvalidRequest, "Error: %s must be a valid did", name)
	}
	return did, nil
}

func queryNSID(r *http.Request, name string) (syntax.NSID, error) {
	v, err := queryString(r, name, true)
	if err != nil {
		return "", err
	}
	n, err := syntax.ParseNSID(v)
	if err != nil {
		return "", pdserr.New(pdserr.InvalidRequest, "Error: %s must be a valid nsid", name)
	}
	return n, nil
}

func queryRecordKey(r *http.Request, name string) (syntax.RecordKey, error) {
	v, err := queryString(r, name, true)
	if err != nil {
		return "", err
	}
	k, err := syntax.ParseRecordKey(v)
	if err != nil {
		return "", pdserr.New(pdserr.InvalidRequest, "Error: %s must be a valid record-key", name)
	}
	return k, nil
}

func queryInt(r *http.Request, name string, def, min, max int) (int, error) {
	v := queryValue(r, name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, pdserr.New(pdserr.InvalidRequest, "Error: %s must be an integer", name)
	}
	if n < min || n > max {
		return 0, pdserr.New(pdserr.InvalidRequest, "Error: %s must be between %d and %d", name, min, max)
	}
	return n, nil
}

func queryBool(r *http.Request, name string) (bool, error) {
	switch v := queryValue(r, name); v {
	case "", "false":
		return false, nil
	case "true":
		return true, nil
	default:
		return false, pdserr.New(pdserr.InvalidRequest, "Error: %s must be a boolean", name)
	}
}

// Listener helpers, so tests and the CLI can bind port 0 and learn the port.

// HTTPServer runs a Server on a listener.
type HTTPServer struct {
	ln  net.Listener
	srv *http.Server
}

// Listen binds addr (host:port; port 0 picks a free one).
func Listen(addr string, h http.Handler, log *slog.Logger) (*HTTPServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	return &HTTPServer{ln: ln, srv: &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}}, nil
}

// Port returns the bound port.
func (h *HTTPServer) Port() int { return h.ln.Addr().(*net.TCPAddr).Port }

// Serve serves until Shutdown; it returns nil after a clean shutdown.
func (h *HTTPServer) Serve() error {
	if err := h.srv.Serve(h.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}

// Shutdown stops accepting requests and waits for those in flight.
func (h *HTTPServer) Shutdown(ctx context.Context) error { return h.srv.Shutdown(ctx) }

// limitLogin counts one login attempt for identifier from the request's
// client address and refuses it past the limit. The ratelimit headers are
// set either way.
func (s *Server) limitLogin(w http.ResponseWriter, r *http.Request, identifier string) error {
	if ratelimit.Bypass(r, s.deps.RateLimitBypass) {
		return nil
	}
	// Every spelling of one account (handle in any case, with or without
	// "@", or its DID) shares one budget.
	key := strings.ToLower(strings.TrimPrefix(strings.TrimSpace(identifier), "@"))
	if a, err := s.deps.Accounts.Resolve(r.Context(), key); err == nil {
		key = a.DID.String()
	}
	ip := ratelimit.ClientIP(r, s.deps.TrustedProxies)
	d := s.logins.Allow(key + "|" + ip.String())
	d.SetHeaders(w.Header())
	return d.Err()
}

// checkUnrouted applies, to a method the server does not serve itself (and
// will forward to another service), the rules that depend on who calls:
// only privileged app passwords may reach chat.bsky.* (direct messages).
// Method names are compared case-insensitively so that a differently
// cased NSID cannot slip past the rule.
func checkUnrouted(p *auth.Principal, nsid string) error {
	if !strings.HasPrefix(strings.ToLower(nsid), "chat.bsky.") {
		return nil
	}
	if p.Kind == auth.AppPass && !p.Privileged {
		return pdserr.New(pdserr.InvalidToken, "Bad token scope: this app password may not use chat; create a privileged one")
	}
	return nil
}
