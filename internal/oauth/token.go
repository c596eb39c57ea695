package oauth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"net/http"
	"time"

	"stratus/internal/account"
)

// handleToken serves the token endpoint: authorization_code and
// refresh_token grants, each with a DPoP proof (without ath) that carries a
// current server nonce.
func (p *Provider) handleToken(w http.ResponseWriter, r *http.Request) {
	out, err := p.token(w, r)
	if err != nil {
		p.writeError(w, r, err)
		return
	}
	p.writeJSON(w, http.StatusOK, out)
}

// tokenResponse is the token endpoint's answer.
type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int    `json:"expires_in"`
	RefreshToken string `json:"refresh_token,omitempty"`
	Scope        string `json:"scope"`
	Sub          string `json:"sub"`
}

func (p *Provider) token(w http.ResponseWriter, r *http.Request) (*tokenResponse, error) {
	if err := parseForm(w, r); err != nil {
		return nil, err
	}
	proof, err := p.checkDPoP(r, "")
	if err != nil {
		return nil, err
	}
	f := r.PostForm
	c, err := p.resolveClient(r.Context(), f.Get("client_id"))
	if err != nil {
		return nil, err
	}
	kid, err := p.authenticateClient(c, f, proof.JKT)
	if err != nil {
		return nil, err
	}
	switch f.Get("grant_type") {
	case "authorization_code":
		return p.codeGrant(r.Context(), c, kid, proof, f.Get("code"), f.Get("redirect_uri"), f.Get("code_verifier"))
	case "refresh_token":
		if !c.canRefresh() {
			return nil, errorf("unauthorized_client", "the client did not declare the refresh_token grant")
		}
		return p.refreshGrant(r.Context(), c, kid, proof, f.Get("refresh_token"))
	case "":
		return nil, errorf("invalid_request", "grant_type is required")
	default:
		return nil, errorf("unsupported_grant_type", "unsupported grant_type")
	}
}

func (p *Provider) codeGrant(ctx context.Context, c *Client, kid string, proof *Proof, code, redirect, verifier string) (*tokenResponse, error) {
	if code == "" || verifier == "" || redirect == "" {
		return nil, errorf("invalid_request", "code, redirect_uri and code_verifier are required")
	}
	codeHash := hashToken(code)
	// The code is deleted before anything else is checked: a failed
	// exchange uses it up too.
	req, err := p.store.ConsumeCode(ctx, codeHash)
	if errors.Is(err, ErrNotFound) {
		if g, gerr := p.store.GrantByCode(ctx, codeHash); gerr == nil {
			// Re-use of a code revokes what was issued for it (spec: PKCE).
			if err := p.store.DeleteGrant(ctx, g.ID); err != nil && !errors.Is(err, ErrNotFound) {
				return nil, err
			}
			p.log.WarnContext(ctx, "authorization code re-used; grant revoked", "client_id", g.ClientID, "did", g.DID)
			return nil, errorf("invalid_grant", "authorization code was already used; the session issued for it is revoked")
		}
		return nil, errorf("invalid_grant", "invalid or expired authorization code")
	}
	if err != nil {
		return nil, err
	}
	now := p.now()
	switch {
	case !now.Before(req.ExpiresAt):
		return nil, errorf("invalid_grant", "invalid or expired authorization code")
	case req.ClientID != c.ID:
		return nil, errorf("invalid_grant", "the code was issued to another client")
	case req.RedirectURI != redirect:
		return nil, errorf("invalid_grant", "redirect_uri does not match the authorization request")
	case !verifierShape.MatchString(verifier):
		return nil, errorf("invalid_grant", "code_verifier must be 43-128 characters of [A-Za-z0-9._~-]")
	case !pkceMatches(verifier, req.CodeChallenge):
		return nil, errorf("invalid_grant", "code_verifier does not match the code_challenge")
	case req.DPoPJKT != proof.JKT:
		return nil, errorf("invalid_grant", "the DPoP key differs from the one used for the authorization request")
	case req.ClientKID != kid:
		return nil, errorf("invalid_grant", "client authentication differs from the authorization request")
	}
	a, err := p.accounts.Get(ctx, req.DID)
	if err != nil {
		return nil, err
	}
	if a.Status == account.Takendown {
		return nil, errorf("invalid_grant", "account has been taken down")
	}
	name := c.Name
	if name == "" {
		name = c.ID
	}
	g := Grant{
		ID: randomToken("grant-")[:32], DID: req.DID, ClientID: c.ID, ClientName: name, Scope: req.Scope, DPoPJKT: proof.JKT,
		AuthMethod: c.AuthMethod, ClientKID: kid, CodeHash: codeHash, CodeChallenge: req.CodeChallenge,
		CreatedAt: now, UpdatedAt: now,
	}
	if c.AuthMethod == authMethodNone {
		g.ExpiresAt = now.Add(PublicSessionTTL)
	}
	access, refresh := p.newTokens(&g, c, now)
	if err := p.store.CreateGrant(ctx, g); err != nil {
		return nil, err
	}
	return p.tokenAnswer(g, access, refresh), nil
}

// newTokens sets fresh token hashes and expiries on g and returns the
// tokens. Refresh tokens never outlive the session.
func (p *Provider) newTokens(g *Grant, c *Client, now time.Time) (access, refresh string) {
	access = randomToken("tok-")
	g.AccessHash, g.AccessExpiresAt, g.UpdatedAt = hashToken(access), now.Add(AccessTTL), now
	g.RefreshHash, g.RefreshExpiresAt = "", time.Time{}
	if c.canRefresh() {
		refresh = randomToken("ref-")
		ttl := PublicRefreshTTL
		if g.AuthMethod == authMethodPrivateKeyJWT {
			ttl = ConfidentialRefreshTTL
		}
		exp := now.Add(ttl)
		if !g.ExpiresAt.IsZero() && exp.After(g.ExpiresAt) {
			exp = g.ExpiresAt
		}
		g.RefreshHash, g.RefreshExpiresAt = hashToken(refresh), exp
	}
	if !g.ExpiresAt.IsZero() && g.AccessExpiresAt.After(g.ExpiresAt) {
		g.AccessExpiresAt = g.ExpiresAt
	}
	return access, refresh
}

func (p *Provider) tokenAnswer(g Grant, access, refresh string) *tokenResponse {
	return &tokenResponse{
		AccessToken: access, TokenType: "DPoP", ExpiresIn: int(g.AccessExpiresAt.Sub(p.now()).Seconds()),
		RefreshToken: refresh, Scope: g.Scope, Sub: g.DID.String(),
	}
}

func pkceMatches(verifier, challenge string) bool {
	h := sha256.Sum256([]byte(verifier))
	return subtle.ConstantTimeCompare([]byte(base64.RawURLEncoding.EncodeToString(h[:])), []byte(challenge)) == 1
}

// refreshGrant rotates a refresh token. A token that was already rotated
// away, or any mismatch of client or DPoP key, ends the whole grant: a
// refresh token presented wrongly is treated as stolen.
func (p *Provider) refreshGrant(ctx context.Context, c *Client, kid string, proof *Proof, token string) (*tokenResponse, error) {
	if token == "" {
		return nil, errorf("invalid_request", "refresh_token is required")
	}
	hash := hashToken(token)
	g, err := p.store.GrantByRefresh(ctx, hash)
	if errors.Is(err, ErrNotFound) {
		if id, rerr := p.store.RetiredRefresh(ctx, hash); rerr == nil {
			p.revokeGrant(ctx, id, "refresh token re-used")
			return nil, errorf("invalid_grant", "refresh token was already used; the session is revoked")
		}
		return nil, errorf("invalid_grant", "invalid refresh token")
	}
	if err != nil {
		return nil, err
	}
	now := p.now()
	fail := func(reason, msg string) (*tokenResponse, error) {
		p.revokeGrant(ctx, g.ID, reason)
		return nil, errorf("invalid_grant", "%s", msg)
	}
	switch {
	case !now.Before(g.RefreshExpiresAt) || (!g.ExpiresAt.IsZero() && !now.Before(g.ExpiresAt)):
		return fail("session expired", "the session has expired")
	case g.ClientID != c.ID:
		return fail("refresh by another client", "the refresh token was issued to another client")
	case g.DPoPJKT != proof.JKT:
		return fail("refresh with another DPoP key", "the DPoP key does not match the session's key")
	}
	if err := requireClientAuthMatch(g.AuthMethod, g.ClientKID, c, kid); err != nil {
		p.revokeGrant(ctx, g.ID, "client authentication changed")
		return nil, err
	}
	a, err := p.accounts.Get(ctx, g.DID)
	if err != nil {
		return nil, err
	}
	if a.Status == account.Takendown {
		return fail("account taken down", "account has been taken down")
	}
	access, refresh := p.newTokens(&g, c, now)
	if err := p.store.RotateGrant(ctx, g, hash); err != nil {
		if errors.Is(err, ErrNotFound) {
			// A concurrent refresh with the same token won: re-use.
			return fail("concurrent refresh", "refresh token was already used; the session is revoked")
		}
		return nil, err
	}
	return p.tokenAnswer(g, access, refresh), nil
}

func (p *Provider) revokeGrant(ctx context.Context, id, reason string) {
	if err := p.store.DeleteGrant(ctx, id); err != nil && !errors.Is(err, ErrNotFound) {
		p.log.ErrorContext(ctx, "revoke oauth grant", "grant", id, "err", err)
		return
	}
	p.log.InfoContext(ctx, "oauth grant revoked", "grant", id, "reason", reason)
}

// handleRevoke serves token revocation (RFC 7009): the grant of an access
// or refresh token (current or already rotated) ends. The answer is 200
// whether or not the token was known.
func (p *Provider) handleRevoke(w http.ResponseWriter, r *http.Request) {
	if err := parseForm(w, r); err != nil {
		p.writeError(w, r, err)
		return
	}
	tok := r.PostForm.Get("token")
	if tok == "" {
		p.writeError(w, r, errorf("invalid_request", "token is required"))
		return
	}
	clientID := r.PostForm.Get("client_id")
	ctx := r.Context()
	hash := hashToken(tok)
	var g Grant
	var err error
	if g, err = p.store.GrantByAccess(ctx, hash); errors.Is(err, ErrNotFound) {
		g, err = p.store.GrantByRefresh(ctx, hash)
	}
	if errors.Is(err, ErrNotFound) {
		if id, rerr := p.store.RetiredRefresh(ctx, hash); rerr == nil {
			g, err = Grant{ID: id}, nil
		}
	}
	switch {
	case err == nil && (clientID == "" || g.ClientID == "" || g.ClientID == clientID):
		p.revokeGrant(ctx, g.ID, "revoked by the client")
	case err != nil && !errors.Is(err, ErrNotFound):
		p.writeError(w, r, err)
		return
	}
	p.writeJSON(w, http.StatusOK, map[string]any{})
}

// handleUserinfo answers who a DPoP-bound access token belongs to.
func (p *Provider) handleUserinfo(w http.ResponseWriter, r *http.Request) {
	g, _, err := p.verifyAccess(r)
	if err != nil {
		var re *ResourceError
		if errors.As(err, &re) {
			for k, v := range re.Header {
				w.Header()[k] = v
			}
			code := "invalid_token"
			if re.Nonce {
				code = "use_dpop_nonce"
			}
			p.writeJSON(w, http.StatusUnauthorized, map[string]string{"error": code, "error_description": re.Err.Message})
			return
		}
		p.writeError(w, r, err)
		return
	}
	out := map[string]any{"sub": g.DID.String()}
	if a, err := p.accounts.Get(r.Context(), g.DID); err == nil {
		out["preferred_username"] = a.Handle.String()
	}
	p.writeJSON(w, http.StatusOK, out)
}
