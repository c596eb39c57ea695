package server

import (
	"context"
	"fmt"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"stratus/internal/auth"
	"stratus/internal/config"
	"stratus/internal/pdserr"
)

// PasswordHash implements auth.Passwords for the configured account.
func (s *Server) PasswordHash(_ context.Context, did syntax.DID) (string, error) {
	s.cfgMu.RLock()
	defer s.cfgMu.RUnlock()
	if did != syntax.DID(s.cfg.DID) {
		return "", fmt.Errorf("no password for %s", did)
	}
	return s.cfg.PasswordHash, nil
}

// updateSecrets applies fn to the running configuration and to
// secrets.json, so the change survives a restart.
func (s *Server) updateSecrets(fn func(*config.Secrets)) error {
	s.cfgMu.Lock()
	defer s.cfgMu.Unlock()
	if err := config.UpdateSecrets(s.cfg.DataDir, fn); err != nil {
		return fmt.Errorf("save secrets: %w", err)
	}
	fn(&s.cfg.Secrets)
	return nil
}

// operator implements the xrpc.Operator methods behind the operator's
// secret-rotation endpoints.
type operator struct{ s *Server }

// RotateJWTSecret replaces the session-token secret: every session ends at
// once. It returns how many live sessions ended.
func (o operator) RotateJWTSecret(ctx context.Context) (int, error) {
	secret := auth.GenerateToken()
	if err := o.s.updateSecrets(func(sec *config.Secrets) { sec.JWTSecret = secret }); err != nil {
		return 0, err
	}
	return o.s.sessions.RotateSecret(ctx, secret)
}

// SetPassword replaces the account password; an empty password generates
// one, which is returned. App passwords and sessions are unaffected.
func (o operator) SetPassword(_ context.Context, password string) (string, error) {
	generated := ""
	if password == "" {
		password = auth.GeneratePassword()
		generated = password
	}
	h, err := auth.HashPassword(password)
	if err != nil {
		return "", pdserr.New(pdserr.InvalidRequest, "%v", err)
	}
	if err := o.s.updateSecrets(func(sec *config.Secrets) { sec.PasswordHash = h }); err != nil {
		return "", err
	}
	return generated, nil
}

// RotateAdminToken replaces the admin token; the old one stops working at
// once.
func (o operator) RotateAdminToken(_ context.Context) (string, error) {
	tok := auth.GenerateToken()
	if err := o.s.updateSecrets(func(sec *config.Secrets) { sec.AdminToken = tok }); err != nil {
		return "", err
	}
	o.s.verifier.SetAdminToken(tok)
	return tok, nil
}
