package xrpc

import (
	"encoding/json"
	"net/http"
	"time"

	"stratus/internal/auth"
	"stratus/internal/identity"
	"stratus/internal/idops"
	"stratus/internal/pdserr"
)

// handleIdentityResolveHandle serves com.atproto.identity.resolveHandle:
// hosted handles from the database, others through DNS and HTTPS.
func (s *Server) handleIdentityResolveHandle(w http.ResponseWriter, r *http.Request, _ *auth.Principal) error {
	v, err := queryString(r, "handle", true)
	if err != nil {
		return err
	}
	did, err := s.deps.Identity.ResolveHandle(r.Context(), v)
	if err != nil {
		return err
	}
	return writeJSON(w, struct {
		DID string `json:"did"`
	}{did.String()})
}

// handleIdentityUpdateHandle serves com.atproto.identity.updateHandle.
func (s *Server) handleIdentityUpdateHandle(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	did, err := s.selfDID(p)
	if err != nil {
		return err
	}
	var in struct {
		Handle string `json:"handle"`
	}
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	if in.Handle == "" {
		return pdserr.New(pdserr.InvalidRequest, "Input must have the property \"handle\"")
	}
	if err := s.deps.Identity.UpdateHandle(r.Context(), did, in.Handle); err != nil {
		return err
	}
	w.WriteHeader(http.StatusOK)
	return nil
}

// handleIdentityGetRecommendedDidCredentials serves
// com.atproto.identity.getRecommendedDidCredentials.
func (s *Server) handleIdentityGetRecommendedDidCredentials(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	did, err := s.selfDID(p)
	if err != nil {
		return err
	}
	c, err := s.deps.Identity.RecommendedCredentials(r.Context(), did)
	if err != nil {
		return err
	}
	return writeJSON(w, c)
}

// handleIdentityRequestPlcOperationSignature serves
// com.atproto.identity.requestPlcOperationSignature. The token goes to
// the operator (app.stratus.admin.getPlcOperationToken), not by email.
func (s *Server) handleIdentityRequestPlcOperationSignature(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	did, err := s.selfDID(p)
	if err != nil {
		return err
	}
	if err := s.deps.Identity.RequestPLCToken(r.Context(), did); err != nil {
		return err
	}
	s.log.InfoContext(r.Context(), "PLC operation signature requested; the operator can show the token with `pds identity plc-token`", "did", did)
	w.WriteHeader(http.StatusOK)
	return nil
}

// handleIdentitySignPlcOperation serves com.atproto.identity.signPlcOperation.
func (s *Server) handleIdentitySignPlcOperation(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	did, err := s.selfDID(p)
	if err != nil {
		return err
	}
	var in idops.SignInput
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	op, err := s.deps.Identity.SignPLCOperation(r.Context(), did, in)
	if err != nil {
		return err
	}
	return writeJSON(w, struct {
		Operation *identity.Operation `json:"operation"`
	}{op})
}

// handleIdentitySubmitPlcOperation serves com.atproto.identity.submitPlcOperation.
func (s *Server) handleIdentitySubmitPlcOperation(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	did, err := s.selfDID(p)
	if err != nil {
		return err
	}
	var in struct {
		Operation json.RawMessage `json:"operation"`
	}
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	var op identity.Operation
	if len(in.Operation) == 0 || json.Unmarshal(in.Operation, &op) != nil {
		return pdserr.New(pdserr.InvalidRequest, "Invalid operation")
	}
	if err := s.deps.Identity.SubmitPLCOperation(r.Context(), did, &op); err != nil {
		return err
	}
	w.WriteHeader(http.StatusOK)
	return nil
}

// handleAdminGetPlcOperationToken serves app.stratus.admin.getPlcOperationToken:
// the pending PLC token of the primary account, for the operator.
func (s *Server) handleAdminGetPlcOperationToken(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	did, err := s.selfDID(p)
	if err != nil {
		return err
	}
	tok, until, err := s.deps.Identity.PLCToken(did)
	if err != nil {
		return err
	}
	return writeJSON(w, struct {
		Token     string `json:"token"`
		ExpiresAt string `json:"expiresAt"`
	}{tok, until.UTC().Format(time.RFC3339)})
}
