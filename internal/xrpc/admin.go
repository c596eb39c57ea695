package xrpc

import (
	"net/http"

	"stratus/internal/auth"
)

// The operator's own methods, under app.stratus.admin.*, callable with the
// admin token only (see routes.go).

// handleAdminRotateJWTSecret serves app.stratus.admin.rotateJwtSecret.
func (s *Server) handleAdminRotateJWTSecret(w http.ResponseWriter, r *http.Request, _ *auth.Principal) error {
	out, err := s.deps.Operator.RotateJWTSecret(r.Context())
	if err != nil {
		return err
	}
	return writeJSON(w, out)
}

// handleAdminSetPassword serves app.stratus.admin.setPassword: the account
// password is replaced with the given one, or a generated one that is
// returned once.
func (s *Server) handleAdminSetPassword(w http.ResponseWriter, r *http.Request, _ *auth.Principal) error {
	var in struct {
		Password string `json:"password"`
	}
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	out, err := s.deps.Operator.SetPassword(r.Context(), in.Password)
	if err != nil {
		return err
	}
	return writeJSON(w, out)
}

// handleAdminRotateAdminToken serves app.stratus.admin.rotateAdminToken.
func (s *Server) handleAdminRotateAdminToken(w http.ResponseWriter, r *http.Request, _ *auth.Principal) error {
	out, err := s.deps.Operator.RotateAdminToken(r.Context())
	if err != nil {
		return err
	}
	return writeJSON(w, out)
}

// handleAdminRotateSigningKey serves app.stratus.admin.rotateSigningKey.
func (s *Server) handleAdminRotateSigningKey(w http.ResponseWriter, r *http.Request, _ *auth.Principal) error {
	out, err := s.deps.Operator.RotateSigningKey(r.Context())
	if err != nil {
		return err
	}
	return writeJSON(w, out)
}

// handleAdminEmitIdentity serves app.stratus.admin.emitIdentity: an
// #identity event for the account, which makes relays and AppViews
// re-resolve its DID document and handle.
func (s *Server) handleAdminEmitIdentity(w http.ResponseWriter, r *http.Request, _ *auth.Principal) error {
	seq, err := s.deps.Operator.EmitIdentity(r.Context())
	if err != nil {
		return err
	}
	return writeJSON(w, struct {
		Seq int64 `json:"seq"`
	}{seq})
}
