package oauth

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"stratus/internal/auth"
	"stratus/internal/pdserr"
	"stratus/internal/scope"
)

// ResourceError is a refused access token or DPoP proof at the resource
// server: 401 with a WWW-Authenticate challenge (RFC 9449 §7.1), and the
// DPoP-Nonce header when the client must retry with a fresh nonce.
type ResourceError struct {
	Err    *pdserr.Error
	Header http.Header
	// Nonce marks a use_dpop_nonce challenge.
	Nonce bool
}

func (e *ResourceError) Error() string { return e.Err.Error() }

// Unwrap exposes the XRPC error for the transport's error mapping.
func (e *ResourceError) Unwrap() error { return e.Err }

// ResponseHeader returns the headers to send with the error.
func (e *ResourceError) ResponseHeader() http.Header { return e.Header }

// UseDPoPNonce is the XRPC error name of a nonce challenge.
const UseDPoPNonce = "use_dpop_nonce"

func (p *Provider) resourceError(nonce bool, msg string) *ResourceError {
	h := http.Header{}
	h.Set("DPoP-Nonce", p.nonces.current())
	if nonce {
		h.Set("WWW-Authenticate", `DPoP error="use_dpop_nonce", error_description="Resource server requires nonce in DPoP proof", algs="ES256"`)
		return &ResourceError{Err: pdserr.New(UseDPoPNonce, "%s", msg), Header: h, Nonce: true}
	}
	h.Set("WWW-Authenticate", `DPoP error="invalid_token", error_description="`+strings.ReplaceAll(msg, `"`, `'`)+`", algs="ES256"`)
	return &ResourceError{Err: pdserr.New(pdserr.InvalidToken, "%s", msg), Header: h}
}

// verifyAccess checks "Authorization: DPoP <token>" and the DPoP proof
// (bound to the token by ath, and to the grant's key) and returns the
// token's grant and parsed scopes.
func (p *Provider) verifyAccess(r *http.Request) (Grant, *scope.Set, error) {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	tok = strings.TrimSpace(tok)
	if !ok || !strings.EqualFold(scheme, "DPoP") || tok == "" || len(tok) > 512 {
		return Grant{}, nil, p.resourceError(false, "DPoP access token required")
	}
	proof, err := p.checkDPoP(r, tok)
	if err != nil {
		var de *dpopError
		if errors.As(err, &de) && de.code == UseDPoPNonce {
			return Grant{}, nil, p.resourceError(true, de.msg)
		}
		return Grant{}, nil, p.resourceError(false, "invalid DPoP proof: "+strings.TrimPrefix(err.Error(), "invalid_dpop_proof: "))
	}
	g, err := p.store.GrantByAccess(r.Context(), hashToken(tok))
	if errors.Is(err, ErrNotFound) {
		return Grant{}, nil, p.resourceError(false, "access token is invalid or revoked")
	}
	if err != nil {
		return Grant{}, nil, err
	}
	if !p.now().Before(g.AccessExpiresAt) {
		return Grant{}, nil, p.resourceError(false, "access token has expired")
	}
	if g.DPoPJKT != proof.JKT {
		return Grant{}, nil, p.resourceError(false, "DPoP key does not match the access token")
	}
	sc, err := parseStored(g.Scope)
	if err != nil {
		return Grant{}, nil, p.resourceError(false, "access token scope is invalid")
	}
	return g, sc, nil
}

// parseStored parses a scope string that was validated when stored.
func parseStored(s string) (*scope.Set, error) { return scope.Parse(s) }

// VerifyAccess implements the resource-server side for the XRPC
// transport: it authenticates a DPoP-bound access token and returns an
// OAuth principal carrying the granted scopes.
func (p *Provider) VerifyAccess(r *http.Request) (*auth.Principal, error) {
	g, sc, err := p.verifyAccess(r)
	if err != nil {
		return nil, err
	}
	return &auth.Principal{Kind: auth.OAuth, DID: g.DID, Scopes: sc, ClientID: g.ClientID}, nil
}

// GrantView is a grant as the operator sees it.
type GrantView struct {
	ID         string    `json:"id"`
	DID        string    `json:"did"`
	ClientID   string    `json:"clientId"`
	ClientName string    `json:"clientName"`
	Scope      string    `json:"scope"`
	CreatedAt  time.Time `json:"createdAt"`
	LastUsedAt time.Time `json:"lastRefreshedAt"`
	ExpiresAt  time.Time `json:"expiresAt"`
}

// ListGrants returns the live grants, newest first.
func (p *Provider) ListGrants(ctx context.Context) ([]GrantView, error) {
	gs, err := p.store.Grants(ctx, p.now())
	if err != nil {
		return nil, err
	}
	out := make([]GrantView, 0, len(gs))
	for _, g := range gs {
		exp := g.RefreshExpiresAt
		if g.AccessExpiresAt.After(exp) {
			exp = g.AccessExpiresAt
		}
		out = append(out, GrantView{ID: g.ID, DID: g.DID.String(), ClientID: g.ClientID, ClientName: g.ClientName,
			Scope: g.Scope, CreatedAt: g.CreatedAt.UTC(), LastUsedAt: g.UpdatedAt.UTC(), ExpiresAt: exp.UTC()})
	}
	return out, nil
}

// RevokeGrant ends a grant: its access and refresh tokens stop working at
// once.
func (p *Provider) RevokeGrant(ctx context.Context, id string) error {
	if id == "" {
		return pdserr.New(pdserr.InvalidRequest, "id is required")
	}
	err := p.store.DeleteGrant(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return pdserr.New(pdserr.InvalidRequest, "No OAuth grant with id %s", id)
	}
	if err == nil {
		p.log.InfoContext(ctx, "oauth grant revoked", "grant", id, "reason", "revoked by the operator")
	}
	return err
}
