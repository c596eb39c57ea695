package oauth

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"net/http"
	"net/url"
	"regexp"
	"strings"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"stratus/internal/account"
	"stratus/internal/auth"
	"stratus/internal/pdserr"
	"stratus/internal/scope"
)

var (
	challengeShape = regexp.MustCompile(`^[A-Za-z0-9_-]{43}$`)
	verifierShape  = regexp.MustCompile(`^[A-Za-z0-9._~-]{43,128}$`)
)

// handlePAR serves the pushed authorization request endpoint (RFC 9126):
// the client posts its authorization parameters with a DPoP proof (and a
// client assertion if confidential) and gets a short-lived request_uri.
func (p *Provider) handlePAR(w http.ResponseWriter, r *http.Request) {
	req, err := p.par(w, r)
	if err != nil {
		p.writeError(w, r, err)
		return
	}
	p.writeJSON(w, http.StatusCreated, map[string]any{
		"request_uri": requestURIPrefix + req.ID,
		"expires_in":  int(RequestTTL.Seconds()),
	})
}

func (p *Provider) par(w http.ResponseWriter, r *http.Request) (*Request, error) {
	if err := parseForm(w, r); err != nil {
		return nil, err
	}
	f := r.PostForm
	proof, err := p.checkDPoP(r, "")
	if err != nil {
		return nil, err
	}
	for _, k := range []string{"request", "request_uri"} {
		if f.Has(k) {
			return nil, errorf("invalid_request", "%s is not accepted at the PAR endpoint", k)
		}
	}
	c, err := p.resolveClient(r.Context(), f.Get("client_id"))
	if err != nil {
		return nil, err
	}
	kid, err := p.authenticateClient(c, f, proof.JKT)
	if err != nil {
		return nil, err
	}
	if f.Get("response_type") != "code" {
		return nil, errorf("unsupported_response_type", "response_type must be code")
	}
	if f.Get("code_challenge_method") != "S256" {
		return nil, errorf("invalid_request", "code_challenge_method must be S256")
	}
	challenge := f.Get("code_challenge")
	if !challengeShape.MatchString(challenge) {
		return nil, errorf("invalid_request", "code_challenge must be a base64url SHA-256 hash")
	}
	state := f.Get("state")
	if state == "" || len(state) > 1024 {
		return nil, errorf("invalid_request", "state is required (at most 1024 characters)")
	}
	redirect := f.Get("redirect_uri")
	if redirect == "" {
		return nil, errorf("invalid_request", "redirect_uri is required")
	}
	if !c.redirectAllowed(redirect) {
		return nil, errorf("invalid_request", "redirect_uri is not registered for this client")
	}
	requested, err := scope.Parse(f.Get("scope"))
	if err != nil {
		return nil, errorf("invalid_scope", "%v", err)
	}
	if bad, ok := requested.SubsetOf(c.Scope); !ok {
		return nil, errorf("invalid_scope", "scope %q is not declared in the client metadata", bad)
	}
	if dk := f.Get("dpop_jkt"); dk != "" && dk != proof.JKT {
		return nil, errorf("invalid_request", "dpop_jkt does not match the DPoP proof")
	}
	mode := f.Get("response_mode")
	if mode != "" && mode != "query" && mode != "fragment" {
		return nil, errorf("invalid_request", "response_mode must be query or fragment")
	}
	prompt := f.Get("prompt")
	if prompt != "" && prompt != "none" && prompt != "login" && prompt != "consent" && prompt != "select_account" {
		return nil, errorf("invalid_request", "unsupported prompt %q", prompt)
	}
	hint := strings.TrimSpace(f.Get("login_hint"))
	if len(hint) > 256 {
		return nil, errorf("invalid_request", "login_hint is too long")
	}
	now := p.now()
	used, err := p.store.ChallengeUsed(r.Context(), challenge, now.Add(-challengeReuseWindow))
	if err != nil {
		return nil, err
	}
	if used {
		return nil, errorf("invalid_request", "code_challenge was already used")
	}
	req := &Request{
		ID: randomToken("req-"), ClientID: c.ID, RedirectURI: redirect, Scope: requested.String(), State: state,
		CodeChallenge: challenge, LoginHint: hint, Prompt: prompt, ResponseMode: mode, DPoPJKT: proof.JKT,
		ClientKID: kid, CreatedAt: now, ExpiresAt: now.Add(RequestTTL),
	}
	if err := p.store.PutRequest(r.Context(), *req); err != nil {
		return nil, err
	}
	return req, nil
}

// pageError is a failure shown as an HTML page because there is no safe
// place to redirect to.
type pageError struct {
	status int
	msg    string
}

func (e *pageError) Error() string { return e.msg }

// loadRequest finds the pending request named by request_uri for
// client_id. The request is not consumed.
func (p *Provider) loadRequest(ctx context.Context, requestURI, clientID string) (*Request, *Client, error) {
	if requestURI == "" {
		return nil, nil, &pageError{http.StatusBadRequest, "This sign-in link is incomplete: authorization requests must be pushed (PAR) first and referenced by request_uri."}
	}
	id, ok := strings.CutPrefix(requestURI, requestURIPrefix)
	if !ok {
		return nil, nil, &pageError{http.StatusBadRequest, "The request_uri is not one this server issued."}
	}
	req, err := p.store.GetRequest(ctx, id)
	if errors.Is(err, ErrNotFound) || (err == nil && (!p.now().Before(req.ExpiresAt) || req.CodeHash != "")) {
		return nil, nil, &pageError{http.StatusBadRequest, "This sign-in request has expired or was already used. Go back to the app and start again."}
	}
	if err != nil {
		return nil, nil, err
	}
	if clientID != req.ClientID {
		return nil, nil, &pageError{http.StatusBadRequest, "The client_id does not match the sign-in request."}
	}
	c, err := p.resolveClient(ctx, req.ClientID)
	if err != nil {
		return nil, nil, &pageError{http.StatusBadRequest, "The app's metadata could not be loaded."}
	}
	return &req, c, nil
}

// handleAuthorize shows the consent page for a pushed request. Requests
// that carry their parameters in the query instead are refused: PAR is
// required. Showing the page does not use the request up.
func (p *Provider) handleAuthorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("request_uri") == "" && (q.Has("response_type") || q.Has("redirect_uri") || q.Has("code_challenge")) {
		p.renderError(w, &pageError{http.StatusBadRequest, "Pushed authorization requests are required: the app must send its request to the PAR endpoint first."})
		return
	}
	req, c, err := p.loadRequest(r.Context(), q.Get("request_uri"), q.Get("client_id"))
	if err != nil {
		p.renderError(w, err)
		return
	}
	if req.Prompt == "none" {
		// Every authorization needs the password, so a silent one fails.
		p.deny(w, r, req, "login_required", "User interaction is required")
		return
	}
	// The user has RequestTTL from the last page view.
	_ = p.store.ExtendRequest(r.Context(), req.ID, p.now().Add(RequestTTL))
	identifier := req.LoginHint
	p.renderConsent(w, r, req, c, identifier, "", http.StatusOK)
}

// handleAuthorizeSubmit handles the consent form: deny, or sign in with
// the account password and approve.
func (p *Provider) handleAuthorizeSubmit(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		p.renderError(w, &pageError{http.StatusBadRequest, "The form could not be read."})
		return
	}
	if r.Header.Get("Sec-Fetch-Site") == "cross-site" {
		p.renderError(w, &pageError{http.StatusForbidden, "This form can only be submitted from this server's own page."})
		return
	}
	f := r.PostForm
	req, c, err := p.loadRequest(r.Context(), f.Get("request_uri"), f.Get("client_id"))
	if err != nil {
		p.renderError(w, err)
		return
	}
	if !p.csrfValid(r, req.ID, f.Get("csrf")) {
		p.renderError(w, &pageError{http.StatusForbidden, "The form has expired or did not come from this page. Reload the page and try again."})
		return
	}
	identifier := strings.TrimSpace(f.Get("identifier"))
	switch f.Get("action") {
	case "deny":
		p.deny(w, r, req, "access_denied", "The user denied the authorization request")
		return
	case "approve":
	default:
		p.renderError(w, &pageError{http.StatusBadRequest, "Unknown form action."})
		return
	}
	if p.limitLogin != nil {
		if err := p.limitLogin(w, r, identifier); err != nil {
			p.renderConsent(w, r, req, c, identifier, "Too many sign-in attempts. Wait a few minutes and try again.", http.StatusTooManyRequests)
			return
		}
	}
	did, err := p.signIn(r.Context(), identifier, f.Get("password"), req.LoginHint)
	if err != nil {
		var pe *pageError
		if errors.As(err, &pe) {
			p.renderConsent(w, r, req, c, identifier, pe.msg, pe.status)
			return
		}
		p.renderError(w, err)
		return
	}
	code := randomToken("cod-")
	if err := p.store.ApproveRequest(r.Context(), req.ID, hashToken(code), did, p.now().Add(CodeTTL)); err != nil {
		if errors.Is(err, ErrNotFound) {
			p.renderError(w, &pageError{http.StatusBadRequest, "This sign-in request was already used."})
			return
		}
		p.renderError(w, err)
		return
	}
	p.redirect(w, r, req, url.Values{"code": {code}})
}

// signIn checks an identifier and the account password (never an app
// password). A failure costs the same whether or not the account exists.
func (p *Provider) signIn(ctx context.Context, identifier, password, hint string) (syntax.DID, error) {
	p.dummyOnce.Do(func() { p.dummyHash, _ = auth.HashPassword("not-a-real-password-but-long-enough") })
	bad := &pageError{http.StatusUnauthorized, "Wrong identifier or password. Use the account password: app passwords cannot be used here."}
	identifier = strings.TrimPrefix(identifier, "@")
	if identifier == "" || password == "" {
		return "", &pageError{http.StatusBadRequest, "Enter your handle and your account password."}
	}
	if len(password) > 512 {
		return "", bad
	}
	a, err := p.accounts.Resolve(ctx, identifier)
	if err != nil {
		if pe, ok := pdserr.As(err); ok && (pe.Name == pdserr.RepoNotFound || pe.Name == pdserr.InvalidRequest) {
			auth.CheckPassword(p.dummyHash, password)
			return "", bad
		}
		return "", err
	}
	hash, err := p.passwords.PasswordHash(ctx, a.DID)
	if err != nil {
		return "", err
	}
	if !auth.CheckPassword(hash, password) {
		return "", bad
	}
	if a.Status == account.Takendown {
		return "", &pageError{http.StatusForbidden, "This account has been taken down."}
	}
	if hint != "" {
		if h, err := p.accounts.Resolve(ctx, strings.TrimPrefix(hint, "@")); err == nil && h.DID != a.DID {
			return "", &pageError{http.StatusForbidden, "The app asked to sign in as " + hint + "; sign in with that account."}
		}
	}
	return a.DID, nil
}

// deny consumes the request and sends the user back with an error.
func (p *Provider) deny(w http.ResponseWriter, r *http.Request, req *Request, code, desc string) {
	if err := p.store.DeleteRequest(r.Context(), req.ID); err != nil && !errors.Is(err, ErrNotFound) {
		p.renderError(w, err)
		return
	}
	p.redirect(w, r, req, url.Values{"error": {code}, "error_description": {desc}})
}

// redirect sends the user to the client's redirect URI with the answer,
// the state and the issuer (RFC 9207), in the query or the fragment.
func (p *Provider) redirect(w http.ResponseWriter, r *http.Request, req *Request, v url.Values) {
	v.Set("state", req.State)
	v.Set("iss", p.issuer)
	target := req.RedirectURI
	if req.ResponseMode == "fragment" {
		target += "#" + v.Encode()
	} else {
		sep := "?"
		if strings.Contains(target, "?") {
			sep = "&"
		}
		target += sep + v.Encode()
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Referrer-Policy", "no-referrer")
	http.Redirect(w, r, target, http.StatusSeeOther)
}

// CSRF protection: the page sets a random cookie; the form carries an
// HMAC of that cookie and the request id. A forged form needs the cookie,
// which other sites can neither read nor set.
const csrfCookie = "stratus_oauth_csrf"

func (p *Provider) csrfToken(cookie, requestID string) string {
	m := hmac.New(sha256.New, p.csrfKey)
	m.Write([]byte(cookie + "|" + requestID))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// ensureCSRFCookie returns the browser's CSRF cookie, setting a new one
// if it has none.
func (p *Provider) ensureCSRFCookie(w http.ResponseWriter, r *http.Request) string {
	if c, err := r.Cookie(csrfCookie); err == nil && len(c.Value) == 43 {
		return c.Value
	}
	v := base64.RawURLEncoding.EncodeToString(randomBytes(32))
	http.SetCookie(w, &http.Cookie{
		Name: csrfCookie, Value: v, Path: "/oauth/authorize", HttpOnly: true,
		Secure: strings.HasPrefix(p.issuer, "https://"), SameSite: http.SameSiteStrictMode, MaxAge: 3600,
	})
	return v
}

func (p *Provider) csrfValid(r *http.Request, requestID, token string) bool {
	c, err := r.Cookie(csrfCookie)
	if err != nil || c.Value == "" || token == "" {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(token), []byte(p.csrfToken(c.Value, requestID))) == 1
}
