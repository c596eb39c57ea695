package xrpc

import (
	"net/http"
	"time"

	"stratus/internal/account"
	"stratus/internal/auth"
	"stratus/internal/pdserr"
)

// sessionOutput is the answer of createSession, refreshSession and
// getSession: every field @atproto/api validates.
type sessionOutput struct {
	AccessJWT       string `json:"accessJwt,omitempty"`
	RefreshJWT      string `json:"refreshJwt,omitempty"`
	Handle          string `json:"handle"`
	DID             string `json:"did"`
	DIDDoc          any    `json:"didDoc,omitempty"`
	Email           string `json:"email,omitempty"`
	EmailConfirmed  bool   `json:"emailConfirmed"`
	EmailAuthFactor bool   `json:"emailAuthFactor"`
	Active          bool   `json:"active"`
	Status          string `json:"status,omitempty"`
}

func (s *Server) sessionOutput(r *http.Request, a account.Account) (sessionOutput, error) {
	doc, err := s.didDocument(r.Context(), a)
	if err != nil {
		return sessionOutput{}, err
	}
	out := sessionOutput{Handle: a.Handle.Normalize().String(), DID: a.DID.String(), DIDDoc: doc, Email: a.Email, Active: a.Active()}
	if !a.Active() {
		out.Status = string(a.Status)
	}
	return out, nil
}

// handleServerCreateSession serves com.atproto.server.createSession.
func (s *Server) handleServerCreateSession(w http.ResponseWriter, r *http.Request, _ *auth.Principal) error {
	var in struct {
		Identifier      string `json:"identifier"`
		Password        string `json:"password"`
		AuthFactorToken string `json:"authFactorToken"`
	}
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	if err := s.limitLogin(w, r, in.Identifier); err != nil {
		return err
	}
	sess, err := s.deps.Sessions.Login(r.Context(), in.Identifier, in.Password)
	if err != nil {
		return err
	}
	return s.writeSession(w, r, sess)
}

// handleServerRefreshSession serves com.atproto.server.refreshSession.
func (s *Server) handleServerRefreshSession(w http.ResponseWriter, r *http.Request, _ *auth.Principal) error {
	tok, err := s.deps.Auth.RefreshToken(r)
	if err != nil {
		return err
	}
	sess, err := s.deps.Sessions.Refresh(r.Context(), tok)
	if err != nil {
		return err
	}
	return s.writeSession(w, r, sess)
}

// writeSession answers with a new session's tokens and account details.
func (s *Server) writeSession(w http.ResponseWriter, r *http.Request, sess *auth.Session) error {
	out, err := s.sessionOutput(r, sess.Account)
	if err != nil {
		return err
	}
	out.AccessJWT, out.RefreshJWT = sess.AccessJWT, sess.RefreshJWT
	return writeJSON(w, out)
}

// handleServerGetSession serves com.atproto.server.getSession.
func (s *Server) handleServerGetSession(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	a, err := s.selfAccount(r, p)
	if err != nil {
		return err
	}
	out, err := s.sessionOutput(r, a)
	if err != nil {
		return err
	}
	if !oauthMayReadEmail(p) {
		out.Email = ""
	}
	return writeJSON(w, out)
}

// handleServerDeleteSession serves com.atproto.server.deleteSession: the
// refresh token's whole session ends, access tokens included.
func (s *Server) handleServerDeleteSession(w http.ResponseWriter, r *http.Request, _ *auth.Principal) error {
	tok, err := s.deps.Auth.RefreshToken(r)
	if err != nil {
		return err
	}
	if err := s.deps.Sessions.Logout(r.Context(), tok); err != nil {
		return err
	}
	w.WriteHeader(http.StatusOK)
	return nil
}

type appPasswordJSON struct {
	Name       string `json:"name"`
	Password   string `json:"password,omitempty"`
	CreatedAt  string `json:"createdAt"`
	Privileged bool   `json:"privileged"`
}

func rfc3339(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

// handleServerCreateAppPassword serves com.atproto.server.createAppPassword.
func (s *Server) handleServerCreateAppPassword(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	did, err := s.selfDID(p)
	if err != nil {
		return err
	}
	var in struct {
		Name       *string `json:"name"`
		Privileged bool    `json:"privileged"`
	}
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	if in.Name == nil {
		return pdserr.New(pdserr.InvalidRequest, "Input must have the property \"name\"")
	}
	ap, err := s.deps.Sessions.CreateAppPassword(r.Context(), did, *in.Name, in.Privileged)
	if err != nil {
		return err
	}
	return writeJSON(w, appPasswordJSON{Name: ap.Name, Password: ap.Password, CreatedAt: rfc3339(ap.CreatedAt), Privileged: ap.Privileged})
}

// handleServerListAppPasswords serves com.atproto.server.listAppPasswords.
func (s *Server) handleServerListAppPasswords(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	did, err := s.selfDID(p)
	if err != nil {
		return err
	}
	aps, err := s.deps.Sessions.ListAppPasswords(r.Context(), did)
	if err != nil {
		return err
	}
	out := struct {
		Passwords []appPasswordJSON `json:"passwords"`
	}{Passwords: make([]appPasswordJSON, len(aps))}
	for i, ap := range aps {
		out.Passwords[i] = appPasswordJSON{Name: ap.Name, CreatedAt: rfc3339(ap.CreatedAt), Privileged: ap.Privileged}
	}
	return writeJSON(w, out)
}

// handleServerRevokeAppPassword serves com.atproto.server.revokeAppPassword.
// Besides the empty answer the lexicon defines, it reports how many live
// sessions the revocation ended, for the operator CLI.
func (s *Server) handleServerRevokeAppPassword(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	did, err := s.selfDID(p)
	if err != nil {
		return err
	}
	var in struct {
		Name string `json:"name"`
	}
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	n, err := s.deps.Sessions.RevokeAppPassword(r.Context(), did, in.Name)
	if err != nil {
		return err
	}
	return writeJSON(w, struct {
		SessionsEnded int `json:"sessionsEnded"`
	}{n})
}
