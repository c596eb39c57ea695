package xrpc

import (
	"net/http"

	"stratus/internal/auth"
	"stratus/internal/pdserr"
)

// handleAdminGetStatus serves app.stratus.admin.getStatus: the operator's
// status report (`pds status`, `pds dashboard`).
func (s *Server) handleAdminGetStatus(w http.ResponseWriter, r *http.Request, _ *auth.Principal) error {
	if s.deps.Status == nil {
		return pdserr.New(pdserr.ServiceUnavailable, "status reports are not available")
	}
	out, err := s.deps.Status(r.Context())
	if err != nil {
		return err
	}
	return writeJSON(w, out)
}

// Serves reports whether nsid is an XRPC method served here (rather than
// forwarded), for labelling metrics.
func (s *Server) Serves(nsid string) bool {
	_, ok := s.routes[nsid]
	return ok
}
