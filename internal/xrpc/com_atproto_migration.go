package xrpc

import (
	"mime"
	"net/http"
	"strings"

	"stratus/internal/auth"
	"stratus/internal/migration"
	"stratus/internal/pdserr"
)

// carMediaType is the encoding of importRepo's input.
const carMediaType = "application/vnd.ipld.car"

// handleRepoImportRepo serves com.atproto.repo.importRepo: the body is a
// CAR stream, spooled to disk within the configured limit and imported
// (see migration.Service.Import).
func (s *Server) handleRepoImportRepo(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	if s.deps.Migration == nil {
		return pdserr.New(pdserr.MethodNotImplemented, "Service is not accepting repo imports")
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || !strings.EqualFold(mt, carMediaType) {
			return pdserr.New(pdserr.InvalidRequest, "Wrong request encoding (Content-Type): %s (expected %s)", ct, carMediaType)
		}
	}
	did, err := s.selfDID(p)
	if err != nil {
		return err
	}
	if _, err := s.deps.Migration.Import(r.Context(), did, r.Body); err != nil {
		return err
	}
	w.WriteHeader(http.StatusOK)
	return nil
}

// handleServerCreateAccount serves com.atproto.server.createAccount, which
// here only lets an account prepared for migration be claimed with a
// service token from its current host (see package migration).
func (s *Server) handleServerCreateAccount(w http.ResponseWriter, r *http.Request, _ *auth.Principal) error {
	if s.deps.Migration == nil {
		return pdserr.New(pdserr.InvalidRequest, "Account creation is not available on this server")
	}
	var in migration.CreateInput
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	tok := ""
	if h := r.Header.Get("Authorization"); len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		tok = strings.TrimSpace(h[7:])
	}
	sess, err := s.deps.Migration.CreateAccount(r.Context(), in, tok)
	if err != nil {
		return err
	}
	return s.writeSession(w, r, sess)
}
