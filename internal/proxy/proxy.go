// Package proxy forwards the XRPC methods this server does not implement
// to the service that does: the AppView by default, the chat service for
// chat.bsky.*, or whichever service the caller names in the atproto-proxy
// header ("did#service_id", resolved through the DID document). Each
// forwarded request carries a fresh service JWT signed by the caller's
// account. Bodies stream both ways; responses are bounded in size and time.
//
// Every outbound connection goes through internal/safehttp, so a DID
// document cannot point the server at its own loopback interface or
// private network.
package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/bluesky-social/indigo/atproto/identity"
	"github.com/bluesky-social/indigo/atproto/syntax"

	"stratus/internal/auth"
	"stratus/internal/pdserr"
	"stratus/internal/safehttp"
	"stratus/internal/serviceauth"
)

// Defaults of the services requests go to without an atproto-proxy header.
const (
	DefaultAppViewDID = "did:web:api.bsky.app"
	DefaultAppViewURL = "https://api.bsky.app"
	DefaultChatDID    = "did:web:api.bsky.chat"
	DefaultChatURL    = "https://api.bsky.chat"

	// AppViewServiceID and ChatServiceID are the DID-document service IDs
	// of the two well-known services.
	AppViewServiceID = "bsky_appview"
	ChatServiceID    = "bsky_chat"
)

// Limits.
const (
	// DefaultTimeout bounds a whole forwarded exchange, response body
	// included.
	DefaultTimeout = 60 * time.Second
	// DefaultMaxResponse bounds a forwarded response body.
	DefaultMaxResponse = 64 << 20
	// MaxRequestBody bounds a forwarded request body.
	MaxRequestBody = 16 << 20
	// maxErrorBody bounds how much of an upstream error answer is read.
	maxErrorBody = 64 << 10
)

// Config says where requests go and how they are bounded.
type Config struct {
	AppViewDID, AppViewURL string
	ChatDID, ChatURL       string
	// PLCURL is the PLC directory used to resolve did:plc services.
	PLCURL string
	// Timeout and MaxResponse bound each exchange; zero means the
	// defaults.
	Timeout     time.Duration
	MaxResponse int64
	// Outbound configures the outbound client. Its zero value is the
	// strict default (https only, public addresses only); only tests set
	// AllowHTTP or AllowPrivate.
	Outbound safehttp.Options
}

// RPCCheck decides whether a principal may call method lxm at service aud
// ("did#service_id"). OAuth sessions are limited by their rpc: scopes;
// a nil RPCCheck allows everything the other rules allow.
type RPCCheck func(ctx context.Context, p *auth.Principal, lxm, aud string) error

// Service forwards requests.
type Service struct {
	cfg    Config
	client *http.Client
	dir    identity.Directory
	signer *serviceauth.Signer
	log    *slog.Logger
	// CheckRPC is the permission hook for OAuth sessions (see RPCCheck).
	CheckRPC RPCCheck
}

// New returns a forwarding service. dir resolves service DIDs; nil builds
// a cached resolver that uses the outbound client and cfg.PLCURL.
func New(cfg Config, signer *serviceauth.Signer, dir identity.Directory, log *slog.Logger) *Service {
	if cfg.AppViewDID == "" {
		cfg.AppViewDID, cfg.AppViewURL = DefaultAppViewDID, DefaultAppViewURL
	}
	if cfg.ChatDID == "" {
		cfg.ChatDID, cfg.ChatURL = DefaultChatDID, DefaultChatURL
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MaxResponse <= 0 {
		cfg.MaxResponse = DefaultMaxResponse
	}
	if log == nil {
		log = slog.Default()
	}
	opts := cfg.Outbound
	opts.Timeout = cfg.Timeout
	// Services answer directly; a redirect would only move the request
	// somewhere the DID document did not name.
	opts.MaxRedirects = -1
	client := safehttp.NewClient(opts)
	if dir == nil {
		base := &identity.BaseDirectory{
			PLCURL:                 strings.TrimRight(cfg.PLCURL, "/"),
			HTTPClient:             *safehttp.NewClient(safehttp.Options{Timeout: 10 * time.Second, AllowHTTP: cfg.Outbound.AllowHTTP, AllowPrivate: cfg.Outbound.AllowPrivate}),
			SkipHandleVerification: true,
		}
		dir = identity.NewCacheDirectory(base, 1000, 10*time.Minute, time.Minute, time.Minute)
	}
	return &Service{cfg: cfg, client: client, dir: dir, signer: signer, log: log}
}

// AppView returns the configured AppView's DID and URL.
func (s *Service) AppView() (did, url string) { return s.cfg.AppViewDID, s.cfg.AppViewURL }

// Target is the service a request goes to.
type Target struct {
	DID       syntax.DID
	ServiceID string
	URL       string
}

// Ref is the target as "did#service_id", the form permission scopes name.
func (t Target) Ref() string { return t.DID.String() + "#" + t.ServiceID }

// IsChat reports whether nsid is in the chat.bsky namespace, in any case.
func IsChat(nsid string) bool { return strings.HasPrefix(strings.ToLower(nsid), "chat.bsky.") }

// Resolve finds the target of a call of nsid: the service named by the
// atproto-proxy header, or else the chat service for chat.bsky.* and the
// AppView for everything else.
func (s *Service) Resolve(ctx context.Context, header, nsid string) (Target, error) {
	if header == "" {
		if IsChat(nsid) {
			return Target{DID: syntax.DID(s.cfg.ChatDID), ServiceID: ChatServiceID, URL: s.cfg.ChatURL}, nil
		}
		return Target{DID: syntax.DID(s.cfg.AppViewDID), ServiceID: AppViewServiceID, URL: s.cfg.AppViewURL}, nil
	}
	didStr, id, ok := strings.Cut(header, "#")
	switch {
	case strings.ContainsAny(header, " \t"):
		return Target{}, pdserr.New(pdserr.InvalidRequest, "proxy header cannot contain spaces")
	case didStr == "":
		return Target{}, pdserr.New(pdserr.InvalidRequest, "no did specified in proxy header")
	case !ok || id == "":
		return Target{}, pdserr.New(pdserr.InvalidRequest, "no service id specified in proxy header")
	case strings.Contains(id, "#"):
		return Target{}, pdserr.New(pdserr.InvalidRequest, "invalid proxy header format")
	}
	did, err := syntax.ParseDID(didStr)
	if err != nil {
		return Target{}, pdserr.New(pdserr.InvalidRequest, "invalid did in proxy header")
	}
	// The configured services are known without a lookup.
	if did.String() == s.cfg.AppViewDID && id == AppViewServiceID {
		return Target{DID: did, ServiceID: id, URL: s.cfg.AppViewURL}, nil
	}
	if did.String() == s.cfg.ChatDID && id == ChatServiceID {
		return Target{DID: did, ServiceID: id, URL: s.cfg.ChatURL}, nil
	}
	ident, err := s.dir.LookupDID(ctx, did)
	if err != nil {
		return Target{}, pdserr.Wrap(err, pdserr.InvalidRequest, "could not resolve proxy did")
	}
	endpoint := ident.GetServiceEndpoint(id)
	if endpoint == "" {
		return Target{}, pdserr.New(pdserr.InvalidRequest, "could not resolve proxy did service url")
	}
	u, err := url.Parse(endpoint)
	if err != nil || safehttp.CheckURL(u, s.cfg.Outbound) != nil {
		return Target{}, pdserr.New(pdserr.InvalidRequest, "proxy did service url is not allowed")
	}
	return Target{DID: did, ServiceID: id, URL: endpoint}, nil
}

// Methods only this server may serve: account management that must be
// called directly, never through another service (compared
// case-insensitively).
var protected = lowerSet(
	"com.atproto.admin.sendEmail",
	"com.atproto.identity.requestPlcOperationSignature",
	"com.atproto.identity.signPlcOperation",
	"com.atproto.identity.updateHandle",
	"com.atproto.server.activateAccount",
	"com.atproto.server.confirmEmail",
	"com.atproto.server.createAppPassword",
	"com.atproto.server.deactivateAccount",
	"com.atproto.server.getAccountInviteCodes",
	"com.atproto.server.getSession",
	"com.atproto.server.listAppPasswords",
	"com.atproto.server.requestAccountDelete",
	"com.atproto.server.requestEmailConfirmation",
	"com.atproto.server.requestEmailUpdate",
	"com.atproto.server.revokeAppPassword",
	"com.atproto.server.updateEmail",
)

// IsProtected reports whether nsid may never be proxied nor have a
// service token minted for it.
func IsProtected(nsid string) bool { return protected[strings.ToLower(nsid)] }

// IsPrivileged reports whether nsid needs a full session or a privileged
// app password: direct messages, and creating accounts elsewhere.
func IsPrivileged(nsid string) bool {
	return IsChat(nsid) || strings.EqualFold(nsid, "com.atproto.server.createAccount")
}

func lowerSet(names ...string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[strings.ToLower(n)] = true
	}
	return m
}

// Check applies the caller rules to a call of nsid at t: protected
// methods are refused, privileged ones need a full session or a privileged
// app password, and the OAuth permission hook has the last word.
func (s *Service) Check(ctx context.Context, p *auth.Principal, nsid string, t Target) error {
	if IsProtected(nsid) {
		return pdserr.New(pdserr.InvalidToken, "Bad token method")
	}
	if p.Kind == auth.AppPass && !p.Privileged && IsPrivileged(nsid) {
		return pdserr.New(pdserr.InvalidToken, "Bad token method")
	}
	if p.Kind == auth.Service {
		// A service token is bound to one method of this server.
		return pdserr.New(pdserr.InvalidToken, "Bad token method")
	}
	if s.CheckRPC != nil {
		return s.CheckRPC(ctx, p, nsid, t.Ref())
	}
	return nil
}

// Request is one call to forward.
type Request struct {
	// In is the caller's request.
	In *http.Request
	// NSID is the method; DID the account the service token is issued for.
	NSID string
	DID  syntax.DID
	// Principal is the authenticated caller.
	Principal *auth.Principal
	// Decode asks the upstream for an encoding this server can read and
	// returns the body decoded, for callers that rewrite the answer.
	Decode bool
}

// Open resolves, checks and sends the request and returns the upstream's
// answer with its body unread (the caller must close it) and the target.
// Transport failures become 502 UpstreamFailure, timeouts 504
// UpstreamTimeout.
func (s *Service) Open(ctx context.Context, req Request) (*http.Response, Target, error) {
	in := req.In
	if in.Method != http.MethodGet && in.Method != http.MethodHead && in.Method != http.MethodPost {
		return nil, Target{}, pdserr.New(pdserr.InvalidRequest, "XRPC requests only supports GET and POST")
	}
	if IsProtected(req.NSID) {
		return nil, Target{}, pdserr.New(pdserr.InvalidToken, "Bad token method")
	}
	t, err := s.Resolve(ctx, in.Header.Get("atproto-proxy"), req.NSID)
	if err != nil {
		return nil, t, err
	}
	if err := s.Check(ctx, req.Principal, req.NSID, t); err != nil {
		return nil, t, err
	}
	lxm, err := syntax.ParseNSID(req.NSID)
	if err != nil {
		return nil, t, pdserr.New(pdserr.InvalidRequest, "invalid xrpc path")
	}
	// The token's audience is the bare service DID, as the reference
	// implementation sends it and AppViews check it; permission checks
	// above use the did#service_id form.
	tok, err := s.signer.Mint(ctx, req.DID, t.DID.String(), &lxm, serviceauth.DefaultTTL)
	if err != nil {
		return nil, t, err
	}
	target := strings.TrimRight(t.URL, "/") + "/xrpc/" + req.NSID
	if in.URL.RawQuery != "" {
		target += "?" + in.URL.RawQuery
	}
	u, err := url.Parse(target)
	if err != nil {
		return nil, t, pdserr.New(pdserr.InvalidRequest, "invalid proxy target")
	}
	if err := safehttp.CheckURL(u, s.cfg.Outbound); err != nil {
		return nil, t, pdserr.Wrap(err, pdserr.UpstreamFailure, "Upstream service unreachable")
	}
	var body io.Reader
	if in.Method == http.MethodPost {
		if in.ContentLength > MaxRequestBody {
			return nil, t, pdserr.New(pdserr.PayloadTooLarge, "request entity too large")
		}
		body = http.MaxBytesReader(nil, in.Body, MaxRequestBody)
	}
	out, err := http.NewRequestWithContext(ctx, in.Method, u.String(), body)
	if err != nil {
		return nil, t, fmt.Errorf("build upstream request: %w", err)
	}
	// Only these headers reach the service, as the reference forwards them.
	for _, h := range []string{"Accept-Language", "Atproto-Accept-Labelers", "X-Bsky-Topics"} {
		if v := in.Header.Values(h); len(v) > 0 {
			out.Header[h] = v
		}
	}
	if !req.Decode {
		// Pass the caller's encoding preference on and the answer back
		// untouched; without one, ask for no compression.
		ae := in.Header.Get("Accept-Encoding")
		if ae == "" {
			ae = "identity"
		}
		out.Header.Set("Accept-Encoding", ae)
	}
	if body != nil {
		for _, h := range []string{"Content-Type", "Content-Encoding"} {
			if v := in.Header.Get(h); v != "" {
				out.Header.Set(h, v)
			}
		}
		out.ContentLength = in.ContentLength
	}
	out.Header.Set("Authorization", "Bearer "+tok)
	resp, err := s.client.Do(out)
	if err != nil {
		if isTimeout(err) {
			return nil, t, pdserr.Wrap(err, pdserr.UpstreamTimeout, "Upstream service timed out")
		}
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, t, pdserr.New(pdserr.PayloadTooLarge, "request entity too large")
		}
		s.log.WarnContext(ctx, "proxy: upstream unreachable", "nsid", req.NSID, "service", t.Ref(), "err", err)
		return nil, t, pdserr.Wrap(err, pdserr.UpstreamFailure, "Upstream service unreachable")
	}
	return resp, t, nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// Response headers passed back to the caller, besides the content headers.
var forwardedResponseHeaders = []string{"Atproto-Repo-Rev", "Atproto-Content-Labelers", "Retry-After"}

// CopyHeaders copies the allow-listed headers of an upstream answer;
// content headers only when content is true.
func CopyHeaders(dst, src http.Header, content bool) {
	if content {
		for _, h := range []string{"Content-Length", "Content-Encoding", "Content-Type", "Content-Language"} {
			if v := src.Get(h); v != "" {
				dst.Set(h, v)
			}
		}
	}
	for _, h := range forwardedResponseHeaders {
		if v := src.Values(h); len(v) > 0 {
			dst.Set(h, strings.Join(v, ","))
		}
	}
}

// Forward serves a call by forwarding it: the upstream status, the
// allow-listed headers and the body stream back as they arrive.
func (s *Service) Forward(w http.ResponseWriter, req Request) error {
	resp, _, err := s.Open(req.In.Context(), req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 400 {
		return UpstreamError(resp)
	}
	return s.Stream(w, resp)
}

// Stream copies a successful upstream answer to w, flushing as data
// arrives. A body over the size limit, or one that stops arriving, cuts
// the connection: the status has been sent, so nothing else can signal the
// failure.
func (s *Service) Stream(w http.ResponseWriter, resp *http.Response) error {
	if resp.ContentLength > s.cfg.MaxResponse {
		return pdserr.New(pdserr.UpstreamFailure, "Upstream response too large")
	}
	CopyHeaders(w.Header(), resp.Header, true)
	w.WriteHeader(resp.StatusCode)
	rc := http.NewResponseController(w)
	buf := make([]byte, 32<<10)
	var n int64
	for {
		k, err := resp.Body.Read(buf)
		if k > 0 {
			n += int64(k)
			if n > s.cfg.MaxResponse {
				s.log.Warn("proxy: upstream response over the size limit; connection cut", "limit", s.cfg.MaxResponse)
				panic(http.ErrAbortHandler)
			}
			if _, werr := w.Write(buf[:k]); werr != nil {
				return nil // the caller went away
			}
			_ = rc.Flush()
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			s.log.Warn("proxy: upstream response failed midway; connection cut", "err", err)
			panic(http.ErrAbortHandler)
		}
	}
}

// Error is an upstream error answer passed on to the caller: its status
// (a 500 becomes 502 UpstreamFailure), its XRPC error name and message, and
// the headers worth keeping (Retry-After, repo rev).
type Error struct {
	Status  int
	Name    string
	Message string
	Header  http.Header
}

// Error implements error.
func (e *Error) Error() string { return fmt.Sprintf("upstream %d %s: %s", e.Status, e.Name, e.Message) }

// UpstreamError reads an upstream error answer (bounded) into an *Error.
func UpstreamError(resp *http.Response) error {
	e := &Error{Status: resp.StatusCode, Header: http.Header{}}
	CopyHeaders(e.Header, resp.Header, false)
	if ct := resp.Header.Get("Content-Type"); strings.Contains(strings.ToLower(ct), "json") {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		var env struct {
			Error   any `json:"error"`
			Message any `json:"message"`
		}
		if json.Unmarshal(b, &env) == nil {
			e.Name, _ = env.Error.(string)
			e.Message, _ = env.Message.(string)
		}
	}
	if e.Status == http.StatusInternalServerError || e.Status < 400 || e.Status > 599 {
		e.Status = http.StatusBadGateway
		if e.Name == "" || e.Name == pdserr.InternalServerError {
			e.Name = pdserr.UpstreamFailure
		}
	}
	if e.Name == "" {
		e.Name = statusName(e.Status)
	}
	return e
}

// statusName names an error for an answer that did not name itself, as
// XRPC names the standard statuses.
func statusName(status int) string {
	switch status {
	case http.StatusBadRequest:
		return pdserr.InvalidRequest
	case http.StatusUnauthorized:
		return pdserr.AuthRequired
	case http.StatusForbidden:
		return pdserr.Forbidden
	case http.StatusNotFound:
		return pdserr.NotFound
	case http.StatusRequestEntityTooLarge:
		return pdserr.PayloadTooLarge
	case http.StatusTooManyRequests:
		return pdserr.RateLimitExceeded
	case http.StatusNotImplemented:
		return pdserr.MethodNotImplemented
	case http.StatusServiceUnavailable:
		return "NotEnoughResources"
	case http.StatusGatewayTimeout:
		return pdserr.UpstreamTimeout
	}
	if status >= 500 {
		return pdserr.UpstreamFailure
	}
	return "Unknown" + strconv.Itoa(status)
}
