package server

import (
	"context"
	"fmt"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"stratus/internal/auth"
	"stratus/internal/config"
	"stratus/internal/pdserr"
	"stratus/internal/repo"
	"stratus/internal/sequencer"
	"stratus/internal/xrpc"
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

// overrideWarning explains that a rotated secret will not survive a restart
// because a flag or environment variable sets it.
func (s *Server) overrideWarning(field string) string {
	s.cfgMu.RLock()
	src := s.cfg.Overridden[field]
	s.cfgMu.RUnlock()
	if src == "" {
		return ""
	}
	return fmt.Sprintf("%s is set by %s, which wins over secrets.json at the next start: update or remove it, or the old value comes back", field, src)
}

// updateSecrets applies fn to the running configuration and to
// secrets.json, so the change survives a restart (unless a flag or an
// environment variable overrides the file; see overrideWarning).
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
// once. The answer says how many live sessions ended.
func (o operator) RotateJWTSecret(ctx context.Context) (*xrpc.Rotation, error) {
	secret := auth.GenerateToken()
	if err := o.s.updateSecrets(func(sec *config.Secrets) { sec.JWTSecret = secret }); err != nil {
		return nil, err
	}
	n, err := o.s.sessions.RotateSecret(ctx, secret)
	if err != nil {
		return nil, err
	}
	return &xrpc.Rotation{SessionsEnded: &n, Warning: o.s.overrideWarning("jwt-secret")}, nil
}

// SetPassword replaces the account password; an empty password generates
// one, which is returned. App passwords and sessions are unaffected.
func (o operator) SetPassword(_ context.Context, password string) (*xrpc.Rotation, error) {
	out := &xrpc.Rotation{}
	if password == "" {
		password = auth.GeneratePassword()
		out.Password = password
	}
	h, err := auth.HashPassword(password)
	if err != nil {
		return nil, pdserr.New(pdserr.InvalidRequest, "%v", err)
	}
	if err := o.s.updateSecrets(func(sec *config.Secrets) { sec.PasswordHash = h }); err != nil {
		return nil, err
	}
	out.Warning = o.s.overrideWarning("password-hash")
	return out, nil
}

// RotateAdminToken replaces the admin token; the old one stops working at
// once.
func (o operator) RotateAdminToken(_ context.Context) (*xrpc.Rotation, error) {
	tok := auth.GenerateToken()
	if err := o.s.updateSecrets(func(sec *config.Secrets) { sec.AdminToken = tok }); err != nil {
		return nil, err
	}
	o.s.verifier.SetAdminToken(tok)
	return &xrpc.Rotation{AdminToken: tok, Warning: o.s.overrideWarning("admin-token")}, nil
}

// KeyRotation reports a signing-key rotation.
type KeyRotation = xrpc.KeyRotation

// RotateSigningKey replaces the account's signing key: the new key is
// saved, the repository is re-signed with it, and #identity and #sync
// events announce the change. A did:web document served here updates at
// once; a did:plc document must be updated at the PLC directory, and the
// answer says how.
func (o operator) RotateSigningKey(ctx context.Context) (*KeyRotation, error) {
	s := o.s
	k, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		return nil, fmt.Errorf("generate signing key: %w", err)
	}
	pub, err := k.PublicKey()
	if err != nil {
		return nil, err
	}
	did := syntax.DID(s.cfg.DID)
	a, err := s.accounts.Get(ctx, did)
	if err != nil {
		return nil, err
	}
	old := s.keys.key.Load()
	// Sign with the new key before saving it, and put the old key back if
	// re-signing fails: the files must never name a key that signs nothing.
	s.keys.key.Store(k)
	now := time.Now()
	if _, err := s.repos.Resign(ctx, did, func(h repo.Head, car []byte) ([]sequencer.Event, error) {
		id, err := sequencer.Identity(did, a.Handle.String(), now)
		if err != nil {
			return nil, err
		}
		sync, err := sequencer.Sync(did, h.Rev, car, now)
		if err != nil {
			return nil, err
		}
		return []sequencer.Event{id, sync}, nil
	}); err != nil {
		s.keys.key.Store(old)
		return nil, fmt.Errorf("re-sign repository: %w", err)
	}
	if err := s.updateSecrets(func(sec *config.Secrets) { sec.SigningKey = config.EncodeKey(k) }); err != nil {
		// The repository is already signed with the new key, so it stays
		// in use; the operator must save it by hand.
		return nil, fmt.Errorf("save new signing key %s: %w", pub.DIDKey(), err)
	}
	if err := config.UpdateSettings(s.cfg.DataDir, func(st *config.Settings) { st.SigningKeyPublic = pub.DIDKey() }); err != nil {
		return nil, fmt.Errorf("save settings: %w", err)
	}
	s.cfgMu.Lock()
	s.cfg.SigningKeyPublic = pub.DIDKey()
	s.cfgMu.Unlock()
	out := &KeyRotation{DID: did.String(), SigningKeyPublic: pub.DIDKey(), Method: did.Method(), Warning: s.overrideWarning("signing-key")}
	if did.Method() == "plc" {
		out.FollowUp = []string{
			"The PLC directory still lists the old key, so relays will not verify new commits until it is updated.",
			"Sign a PLC operation with your rotation key that keeps every other field and sets",
			"  verificationMethods.atproto = " + pub.DIDKey(),
			"and submit it to " + s.cfg.PLCURL + "/" + did.String() + " (for example with goat: goat plc update).",
		}
	}
	return out, nil
}

// EmitIdentity appends an #identity event for the account.
func (o operator) EmitIdentity(ctx context.Context) (int64, error) {
	return o.s.accounts.EmitIdentity(ctx, syntax.DID(o.s.cfg.DID))
}
