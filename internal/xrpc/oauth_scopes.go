package xrpc

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strings"

	"stratus/internal/auth"
	"stratus/internal/pdserr"
	"stratus/internal/proxy"
	"stratus/internal/scope"
)

// OAuth scope enforcement. Every method a DPoP-bound OAuth token may call
// is listed in oauthRules with the permission it needs; dispatch consults
// the table for every OAuth-authenticated request, so a method that is
// not listed is refused rather than open. The table sits beside the
// method table in routes.go and a test checks that every authenticated
// route has an entry.

// InsufficientScope is the XRPC error of a request whose OAuth token lacks
// the permission the method needs (403).
const InsufficientScope = "InsufficientScope"

// oauthRule decides whether an OAuth principal may call a method. body is
// the request body, already read (within the method's size limit), for
// rules that depend on the input; it is nil for queries.
type oauthRule func(s *Server, r *http.Request, p *auth.Principal, body []byte) error

var (
	// oauthAny allows every OAuth token (the atproto scope is always
	// present): methods that only read the caller's own session.
	oauthAny oauthRule = func(*Server, *http.Request, *auth.Principal, []byte) error { return nil }
	// oauthNever refuses OAuth tokens: methods only a full session may
	// call (credentials, account state), as the reference PDS does.
	oauthNever oauthRule = func(_ *Server, _ *http.Request, _ *auth.Principal, _ []byte) error {
		return pdserr.New(pdserr.Forbidden, "OAuth credentials are not supported for this endpoint")
	}
)

// oauthRules maps each method an OAuth token may reach to its rule.
var oauthRules = map[string]oauthRule{
	"com.atproto.server.getSession":         oauthAny, // email is shown only with account:email (see handler)
	"com.atproto.server.checkAccountStatus": oauthAny,
	"com.atproto.server.activateAccount":    oauthNever,
	"com.atproto.server.deactivateAccount":  oauthNever,
	"com.atproto.server.createAppPassword":  oauthNever,
	"com.atproto.server.listAppPasswords":   oauthNever,
	"com.atproto.server.revokeAppPassword":  oauthNever,

	"com.atproto.repo.createRecord": repoRule(func(in repoInput) []repoNeed { return []repoNeed{{in.Collection, scope.Create}} }),
	// putRecord may create or replace, so it needs both, as the reference
	// PDS requires.
	"com.atproto.repo.putRecord": repoRule(func(in repoInput) []repoNeed {
		return []repoNeed{{in.Collection, scope.Create}, {in.Collection, scope.Update}}
	}),
	"com.atproto.repo.deleteRecord": repoRule(func(in repoInput) []repoNeed { return []repoNeed{{in.Collection, scope.Delete}} }),
	"com.atproto.repo.applyWrites": repoRule(func(in repoInput) []repoNeed {
		var needs []repoNeed
		for _, w := range in.Writes {
			switch w.Type {
			case typeCreate:
				needs = append(needs, repoNeed{w.Collection, scope.Create})
			case typeUpdate:
				needs = append(needs, repoNeed{w.Collection, scope.Update})
			case typeDelete:
				needs = append(needs, repoNeed{w.Collection, scope.Delete})
			default:
				// The handler refuses unknown types; no write can happen.
			}
		}
		return needs
	}),
	"com.atproto.repo.uploadBlob": func(_ *Server, r *http.Request, p *auth.Principal, _ []byte) error {
		mt := r.Header.Get("Content-Type")
		if mt == "" {
			mt = "application/octet-stream"
		}
		if !p.Scopes.AllowsBlob(mt) {
			return insufficient("blob:" + strings.TrimSpace(strings.Split(mt, ";")[0]))
		}
		return nil
	},
	"com.atproto.identity.updateHandle": func(_ *Server, _ *http.Request, p *auth.Principal, _ []byte) error {
		if !p.Scopes.AllowsIdentity("handle") {
			return insufficient("identity:handle")
		}
		return nil
	},
	// Methods answered by the AppView with local records merged in: the
	// proxy checks the rpc: permission against the service the call
	// actually goes to, as for every forwarded method.
	"app.bsky.feed.getTimeline":   oauthAny,
	"app.bsky.feed.getAuthorFeed": oauthAny,
	"app.bsky.feed.getPostThread": oauthAny,
	"app.bsky.actor.getProfile":   oauthAny,
	"app.bsky.actor.getProfiles":  oauthAny,
	// The handler checks the rpc: permission for the audience and method
	// the caller asks a token for.
	"com.atproto.server.getServiceAuth": oauthAny,
	// Preferences are stored here but belong to the AppView's API: the
	// reference PDS asks for the rpc: permission at the AppView.
	"app.bsky.actor.getPreferences": appViewRPC("app.bsky.actor.getPreferences"),
	"app.bsky.actor.putPreferences": appViewRPC("app.bsky.actor.putPreferences"),
	// DID document changes need the identity permission.
	"com.atproto.identity.getRecommendedDidCredentials": identityRule,
	"com.atproto.identity.requestPlcOperationSignature": identityRule,
	"com.atproto.identity.signPlcOperation":             identityRule,
	"com.atproto.identity.submitPlcOperation":           identityRule,
	// Lists what the caller's own repository lacks; changes nothing.
	"com.atproto.repo.listMissingBlobs": oauthAny,
	"com.atproto.repo.importRepo": func(_ *Server, _ *http.Request, p *auth.Principal, _ []byte) error {
		if !p.Scopes.AllowsAccount("repo", "manage") {
			return insufficient("account:repo?action=manage")
		}
		return nil
	},
}

// identityRule admits tokens allowed to change the whole DID document.
func identityRule(_ *Server, _ *http.Request, p *auth.Principal, _ []byte) error {
	if !p.Scopes.AllowsIdentity("*") {
		return insufficient("identity:*")
	}
	return nil
}

// appViewRPC admits tokens whose rpc: scopes allow lxm at the AppView the
// server is configured with.
func appViewRPC(lxm string) oauthRule {
	return func(s *Server, _ *http.Request, p *auth.Principal, _ []byte) error {
		aud := s.appViewAud()
		if !p.Scopes.AllowsRPC(lxm, aud) {
			return insufficient("rpc:" + lxm + "?aud=" + aud)
		}
		return nil
	}
}

// appViewAud is the service reference of the configured AppView, the
// audience of rpc: permissions for AppView methods answered here.
func (s *Server) appViewAud() string {
	did := proxy.DefaultAppViewDID
	if s.deps.Proxy != nil {
		did, _ = s.deps.Proxy.AppView()
	}
	return did + "#bsky_appview"
}

// oauthBodyRules are the rules that read the request body.
var oauthBodyRules = map[string]bool{
	"com.atproto.repo.createRecord": true, "com.atproto.repo.putRecord": true,
	"com.atproto.repo.deleteRecord": true, "com.atproto.repo.applyWrites": true,
}

type repoInput struct {
	Collection string `json:"collection"`
	Writes     []struct {
		Type       string `json:"$type"`
		Collection string `json:"collection"`
	} `json:"writes"`
}

type repoNeed struct{ collection, action string }

// repoRule derives repo permissions from the decoded input. A body that
// does not decode is refused with the error the handler would give.
func repoRule(needs func(repoInput) []repoNeed) oauthRule {
	return func(_ *Server, r *http.Request, p *auth.Principal, body []byte) error {
		var in repoInput
		clone := r.Clone(r.Context())
		clone.Body = io.NopCloser(bytes.NewReader(body))
		if err := decodeJSON(clone, &in); err != nil {
			return err
		}
		for _, n := range needs(in) {
			if !p.Scopes.AllowsRepo(n.collection, n.action) {
				return insufficient("repo:" + n.collection + "?action=" + n.action)
			}
		}
		return nil
	}
}

func insufficient(need string) error {
	return pdserr.New(InsufficientScope, "Missing required scope %q", need)
}

// authorizeOAuth applies the method's rule to an OAuth principal. A
// method without a rule is refused. For rules that read the body, the
// body is read here (within limit) and handed on to the handler intact.
func (s *Server) authorizeOAuth(w http.ResponseWriter, r *http.Request, nsid string, limit int64, p *auth.Principal) error {
	rule, ok := oauthRules[nsid]
	if !ok {
		return pdserr.New(pdserr.Forbidden, "OAuth credentials are not supported for %s", nsid)
	}
	var body []byte
	if oauthBodyRules[nsid] {
		if r.ContentLength > limit {
			return pdserr.New(pdserr.PayloadTooLarge, "request entity too large")
		}
		var err error
		body, err = io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
		var maxErr *http.MaxBytesError
		if errors.As(err, &maxErr) {
			return pdserr.New(pdserr.PayloadTooLarge, "request entity too large")
		}
		if err != nil {
			return errClientGone
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	return rule(s, r, p, body)
}

// AuthorizeOAuthRPC is the rpc: permission check for requests the server
// forwards to another service: an OAuth principal may call method lxm at
// the service aud (the did#service_id the request is proxied to) only if
// its scopes allow it. Other principals pass. Proxying code calls it
// before forwarding and before minting a service token for an OAuth
// session.
func AuthorizeOAuthRPC(p *auth.Principal, lxm, aud string) error {
	if p == nil || p.Kind != auth.OAuth {
		return nil
	}
	if !p.Scopes.AllowsRPC(lxm, aud) {
		return insufficient("rpc:" + lxm + "?aud=" + aud)
	}
	return nil
}

// oauthMayReadEmail reports whether a principal may see the account's
// email: every non-OAuth principal, and OAuth tokens with account:email
// (or transition:email).
func oauthMayReadEmail(p *auth.Principal) bool {
	return p == nil || p.Kind != auth.OAuth || p.Scopes.AllowsAccount("email", "read")
}

// responseHeaderError is an error that carries response headers (the
// WWW-Authenticate challenge of a refused DPoP token).
type responseHeaderError interface {
	ResponseHeader() http.Header
}

// setErrorHeaders copies an error's response headers to w.
func setErrorHeaders(w http.ResponseWriter, err error) {
	var he responseHeaderError
	if errors.As(err, &he) {
		for k, v := range he.ResponseHeader() {
			w.Header()[k] = v
		}
	}
}
