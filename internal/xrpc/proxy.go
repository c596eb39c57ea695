package xrpc

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"stratus/internal/account"
	"stratus/internal/auth"
	"stratus/internal/pdserr"
	"stratus/internal/proxy"
	"stratus/internal/readafter"
	"stratus/internal/safehttp"
	"stratus/internal/serviceauth"
)

// forward serves a method this server does not implement by forwarding it
// to the service that does, for authenticated callers only.
func (s *Server) forward(w http.ResponseWriter, r *http.Request, nsid string) error {
	// Authenticated once: a DPoP proof may only be used once.
	p, err := s.deps.Auth.Authenticate(r)
	if err != nil {
		return err
	}
	if err := checkUnrouted(p, nsid); err != nil {
		return err
	}
	if s.deps.Proxy == nil {
		return pdserr.New(pdserr.MethodNotImplemented, "Method Not Implemented")
	}
	did, err := s.selfDID(p)
	if err != nil {
		return err
	}
	return s.deps.Proxy.Forward(w, proxy.Request{In: r, NSID: nsid, DID: did, Principal: p})
}

// writeUpstreamError passes an upstream error answer on as an XRPC error
// with the upstream's status.
func writeUpstreamError(w http.ResponseWriter, e *proxy.Error) {
	for k, v := range e.Header {
		w.Header()[k] = v
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(e.Status)
	json.NewEncoder(w).Encode(errorBody{Error: e.Name, Message: e.Message})
}

// handleReadAfterWrite serves the AppView reads whose answers get the
// account's newest records merged in (see internal/readafter). Everything
// else about them is plain forwarding.
func (s *Server) handleReadAfterWrite(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	nsid := r.PathValue("nsid")
	if s.deps.Proxy == nil {
		return pdserr.New(pdserr.MethodNotImplemented, "Method Not Implemented")
	}
	did, err := s.selfDID(p)
	if err != nil {
		return err
	}
	ctx := r.Context()
	resp, _, err := s.deps.Proxy.Open(ctx, proxy.Request{In: r, NSID: nsid, DID: did, Principal: p, Decode: true})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 400 {
		return proxy.UpstreamError(resp)
	}
	rev := resp.Header.Get("Atproto-Repo-Rev")
	if rev == "" || s.deps.RecordsSince == nil || !readafter.IsJSON(resp.Header.Get("Content-Type")) {
		return s.deps.Proxy.Stream(w, resp)
	}
	local, err := readafter.Since(ctx, s.deps.RecordsSince, did, rev)
	if err != nil {
		s.log.WarnContext(ctx, "read-after-write: read local records", "err", err)
		return s.deps.Proxy.Stream(w, resp)
	}
	if local.Empty() {
		return s.deps.Proxy.Stream(w, resp)
	}
	body, err := safehttp.ReadAll(resp.Body, proxy.DefaultMaxResponse)
	if err != nil {
		if errors.Is(err, safehttp.ErrTooLarge) {
			return pdserr.New(pdserr.UpstreamFailure, "Upstream response too large")
		}
		return pdserr.Wrap(err, pdserr.UpstreamFailure, "Upstream response failed")
	}
	viewer, err := s.localViewer(r, did)
	if err == nil {
		var merged []byte
		if merged, err = readafter.Merge(nsid, body, local, viewer); err == nil {
			body = merged
		}
	}
	if err != nil {
		// The upstream answer is still good; serve it as it came.
		s.log.WarnContext(ctx, "read-after-write: merge", "nsid", nsid, "err", err)
	}
	proxy.CopyHeaders(w.Header(), resp.Header, false)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	if oldest := oldestLocal(local); !oldest.IsZero() {
		w.Header().Set("Atproto-Upstream-Lag", strconv.FormatInt(time.Since(oldest).Milliseconds(), 10))
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(body)
	return nil
}

// oldestLocal is the time of the oldest merged record: how far the
// AppView lags behind.
func oldestLocal(l readafter.Local) time.Time {
	var oldest string
	if l.Profile != nil {
		oldest = l.Profile.IndexedAt
	}
	for _, p := range l.Posts {
		if oldest == "" || p.IndexedAt < oldest {
			oldest = p.IndexedAt
		}
	}
	t, _ := time.Parse(time.RFC3339Nano, oldest)
	return t
}

// localViewer gathers what rendering the account's records needs.
func (s *Server) localViewer(r *http.Request, did syntax.DID) (readafter.Viewer, error) {
	a, err := s.deps.Accounts.Get(r.Context(), did)
	if err != nil {
		return readafter.Viewer{}, err
	}
	v := readafter.Viewer{DID: did, Handle: a.Handle.String(), BlobURL: s.blobURL}
	rec, err := s.deps.Repos.GetRecord(r.Context(), did, "app.bsky.actor.profile", "self", nil)
	switch {
	case err == nil:
		v.Profile = rec.Value
	case pdserr.Is(err, pdserr.RecordNotFound):
	default:
		return v, err
	}
	return v, nil
}

// blobURL is where an image blob of a hosted account is fetched from:
// this server's getBlob.
func (s *Server) blobURL(did syntax.DID, cid string) string {
	return s.deps.PublicURL + "/xrpc/com.atproto.sync.getBlob?did=" + did.String() + "&cid=" + cid
}

// localPrefs reports whether a preferences call is answered here: unless
// the caller names another AppView in atproto-proxy, preferences are kept
// by this server, as the reference implementation does.
func (s *Server) localPrefs(r *http.Request) bool {
	h := r.Header.Get("atproto-proxy")
	if h == "" || s.deps.Proxy == nil {
		return true
	}
	did, _ := s.deps.Proxy.AppView()
	return h == did+"#"+proxy.AppViewServiceID
}

// fullAccess reports whether a principal is a full session (or the
// operator): only those see and set personal details.
func fullAccess(p *auth.Principal) bool { return p.Kind == auth.Access || p.Kind == auth.Admin }

// handleActorGetPreferences serves app.bsky.actor.getPreferences.
func (s *Server) handleActorGetPreferences(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	if !s.localPrefs(r) {
		return s.forward(w, r, "app.bsky.actor.getPreferences")
	}
	did, err := s.selfDID(p)
	if err != nil {
		return err
	}
	prefs, err := s.deps.Prefs.Get(r.Context(), did, fullAccess(p))
	if err != nil {
		return err
	}
	return writeJSON(w, struct {
		Preferences []json.RawMessage `json:"preferences"`
	}{prefs})
}

// handleActorPutPreferences serves app.bsky.actor.putPreferences.
func (s *Server) handleActorPutPreferences(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	if !s.localPrefs(r) {
		return s.forward(w, r, "app.bsky.actor.putPreferences")
	}
	did, err := s.selfDID(p)
	if err != nil {
		return err
	}
	// Only a takedown stops preference writes, as in the reference PDS: a
	// deactivated account receiving a migration gets its preferences
	// before it is activated.
	if a, err := s.deps.Accounts.Get(r.Context(), did); err != nil {
		return err
	} else if a.Status == account.Takendown {
		return pdserr.New(pdserr.AccountTakedown, "Account has been taken down")
	}
	var in struct {
		Preferences *[]json.RawMessage `json:"preferences"`
	}
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	if in.Preferences == nil {
		return pdserr.New(pdserr.InvalidRequest, "Input must have the property \"preferences\"")
	}
	if err := s.deps.Prefs.Put(r.Context(), did, *in.Preferences, fullAccess(p)); err != nil {
		return err
	}
	w.WriteHeader(http.StatusOK)
	return nil
}

// handleServerGetServiceAuth serves com.atproto.server.getServiceAuth: a
// service JWT signed by the account, for the caller to present to another
// service. Method-less tokens (valid for any method) are minted only for
// full sessions and live at most a minute; protected methods never get
// one; privileged ones need a full session or a privileged app password.
func (s *Server) handleServerGetServiceAuth(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	did, err := s.selfDID(p)
	if err != nil {
		return err
	}
	aud, err := queryString(r, "aud", true)
	if err != nil {
		return err
	}
	if !validAudience(aud) {
		return pdserr.New(pdserr.InvalidRequest, "aud must be a valid atproto DID or did#serviceId reference")
	}
	var lxm *syntax.NSID
	if v := r.URL.Query().Get("lxm"); v != "" {
		n, err := syntax.ParseNSID(v)
		if err != nil {
			return pdserr.New(pdserr.InvalidRequest, "Error: lxm must be a valid nsid")
		}
		lxm = &n
	}
	now := time.Now()
	ttl := serviceauth.DefaultTTL
	if v := r.URL.Query().Get("exp"); v != "" {
		exp, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return pdserr.New(pdserr.InvalidRequest, "Error: exp must be an integer")
		}
		ttl = time.Unix(exp, 0).Sub(now)
		switch {
		case ttl < 0:
			return pdserr.New(pdserr.BadExpiration, "expiration is in past")
		case ttl > serviceauth.MaxTTL:
			return pdserr.New(pdserr.BadExpiration, "cannot request a token with an expiration more than an hour in the future")
		case lxm == nil && ttl > time.Minute:
			return pdserr.New(pdserr.BadExpiration, "cannot request a method-less token with an expiration more than a minute in the future")
		}
	}
	if lxm == nil && !p.Owner() {
		return pdserr.New(pdserr.InvalidToken, "Bad token scope: only a full session may request a token without lxm")
	}
	if lxm != nil {
		if proxy.IsProtected(lxm.String()) {
			return pdserr.New(pdserr.InvalidRequest, "cannot request a service auth token for the following protected method: %s", lxm)
		}
		if p.Kind == auth.AppPass && !p.Privileged && proxy.IsPrivileged(lxm.String()) {
			return pdserr.New(pdserr.InvalidRequest, "insufficient access to request a service auth token for the following method: %s", lxm)
		}
	}
	if s.deps.Proxy != nil && s.deps.Proxy.CheckRPC != nil {
		m := "*"
		if lxm != nil {
			m = lxm.String()
		}
		if err := s.deps.Proxy.CheckRPC(r.Context(), p, m, aud); err != nil {
			return err
		}
	}
	tok, err := s.deps.Signer.Mint(r.Context(), did, aud, lxm, ttl)
	if err != nil {
		return err
	}
	return writeJSON(w, struct {
		Token string `json:"token"`
	}{tok})
}

// validAudience accepts a DID or a did#service_id reference.
func validAudience(aud string) bool {
	d, frag, hasFrag := strings.Cut(aud, "#")
	if _, err := syntax.ParseDID(d); err != nil {
		return false
	}
	if !hasFrag {
		return true
	}
	if frag == "" || len(frag) > 128 {
		return false
	}
	for _, c := range frag {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// authenticateService accepts a session (as authRequired does) or a
// service JWT issued by a hosted account for exactly this method and
// addressed to this server.
func (s *Server) authenticateService(r *http.Request, nsid string) (*auth.Principal, error) {
	h := r.Header.Get("Authorization")
	scheme, tok, _ := strings.Cut(h, " ")
	if s.deps.ServiceAuth == nil || !strings.EqualFold(scheme, "bearer") || !serviceauth.LooksLikeServiceToken(strings.TrimSpace(tok)) {
		return s.deps.Auth.Authenticate(r)
	}
	lxm, err := syntax.ParseNSID(nsid)
	if err != nil {
		return nil, pdserr.New(pdserr.InvalidRequest, "invalid xrpc path")
	}
	did, err := s.deps.ServiceAuth.Verify(r.Context(), strings.TrimSpace(tok), lxm)
	if err != nil {
		return nil, err
	}
	return &auth.Principal{Kind: auth.Service, DID: did}, nil
}
