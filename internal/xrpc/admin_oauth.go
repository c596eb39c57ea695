package xrpc

import (
	"net/http"

	"stratus/internal/auth"
	"stratus/internal/oauth"
	"stratus/internal/pdserr"
)

// handleAdminListOAuthGrants serves app.stratus.admin.listOAuthGrants: the
// live OAuth grants (sessions of OAuth clients), newest first.
func (s *Server) handleAdminListOAuthGrants(w http.ResponseWriter, r *http.Request, _ *auth.Principal) error {
	if s.deps.OAuth == nil {
		return pdserr.New(pdserr.MethodNotImplemented, "OAuth is not enabled")
	}
	grants, err := s.deps.OAuth.ListGrants(r.Context())
	if err != nil {
		return err
	}
	if grants == nil {
		grants = []oauth.GrantView{}
	}
	return writeJSON(w, map[string]any{"grants": grants})
}

// handleAdminRevokeOAuthGrant serves app.stratus.admin.revokeOAuthGrant:
// the grant's tokens stop working at once.
func (s *Server) handleAdminRevokeOAuthGrant(w http.ResponseWriter, r *http.Request, _ *auth.Principal) error {
	if s.deps.OAuth == nil {
		return pdserr.New(pdserr.MethodNotImplemented, "OAuth is not enabled")
	}
	var in struct {
		ID string `json:"id"`
	}
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	if err := s.deps.OAuth.RevokeGrant(r.Context(), in.ID); err != nil {
		return err
	}
	return writeJSON(w, map[string]any{})
}
