package auth

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"stratus/internal/account"
	"stratus/internal/pdserr"
)

// RefreshGrace is how long an already rotated refresh token may still be
// presented and get the same successor back: clients such as goat never
// store the rotated token, and a retried request must not log them out.
const RefreshGrace = 2 * time.Hour

// MaxAppPasswordName is the longest app password name.
const MaxAppPasswordName = 100

// ErrDuplicate is returned by a SessionStore for an app password name that
// is already taken.
var ErrDuplicate = errors.New("duplicate")

// ErrNotFound is returned by a SessionStore for an unknown token or name.
var ErrNotFound = errors.New("not found")

// ErrRevoked is returned by a SessionStore asked to store a refresh token
// of an app password that no longer exists.
var ErrRevoked = errors.New("app password revoked")

// AppPassword is a stored app password.
type AppPassword struct {
	DID        syntax.DID
	Name       string
	Hash       string
	Privileged bool
	CreatedAt  time.Time
}

// RefreshToken is the server-side record of an issued refresh token.
type RefreshToken struct {
	JTI         string
	DID         syntax.DID
	SID         string
	AppPassword string // empty for account-password sessions
	Privileged  bool
	ExpiresAt   time.Time
	NextJTI     string    // set once rotated
	RotatedAt   time.Time // zero until rotated
}

// SessionStore persists app passwords, refresh tokens and ended sessions.
// Implementations must be safe for concurrent use.
type SessionStore interface {
	CreateAppPassword(ctx context.Context, ap AppPassword) error
	AppPasswords(ctx context.Context, did syntax.DID) ([]AppPassword, error)
	// AppPasswordByHash finds the app password of did with the given
	// hash, or returns ErrNotFound.
	AppPasswordByHash(ctx context.Context, did syntax.DID, hash string) (AppPassword, error)
	// DeleteAppPassword removes the app password and its refresh tokens and
	// records its live sessions as ended until revokeUntil, in one
	// transaction. It returns the ended session ids, or ErrNotFound.
	DeleteAppPassword(ctx context.Context, did syntax.DID, name string, now, revokeUntil time.Time) ([]string, error)
	PutRefresh(ctx context.Context, t RefreshToken) error
	GetRefresh(ctx context.Context, jti string) (RefreshToken, error)
	// RotateRefresh links old to next and stores next, only if old has not
	// been rotated yet; it returns ErrNotFound otherwise.
	RotateRefresh(ctx context.Context, oldJTI string, next RefreshToken, at time.Time) error
	// EndSession deletes the refresh tokens of sid and records it as ended
	// until revokeUntil.
	EndSession(ctx context.Context, sid string, revokeUntil time.Time) error
	// EndAllSessions does the same for every session and returns their ids.
	EndAllSessions(ctx context.Context, now, revokeUntil time.Time) ([]string, error)
	// EndedSessions returns the ended sessions whose record is still
	// needed at now.
	EndedSessions(ctx context.Context, now time.Time) (map[string]time.Time, error)
	// Prune deletes expired refresh tokens and ended-session records.
	Prune(ctx context.Context, now time.Time) error
}

// Passwords reads and replaces account password hashes.
type Passwords interface {
	PasswordHash(ctx context.Context, did syntax.DID) (string, error)
}

// Accounts is what sessions need from the account service.
type Accounts interface {
	Resolve(ctx context.Context, id string) (account.Account, error)
	Get(ctx context.Context, did syntax.DID) (account.Account, error)
}

// Sessions logs accounts in and out, rotates refresh tokens, manages app
// passwords, and verifies access tokens. Ended sessions are kept in
// memory, so checking a token never touches the database.
type Sessions struct {
	tokens    *Tokens
	store     SessionStore
	accounts  Accounts
	passwords Passwords
	now       func() time.Time
	hasher    *AppPasswordHasher

	mu    sync.RWMutex
	ended map[string]time.Time // sid → until
}

// NewSessions returns the session service, loading the ended sessions.
func NewSessions(ctx context.Context, tokens *Tokens, store SessionStore, accounts Accounts, passwords Passwords, now func() time.Time) (*Sessions, error) {
	if now == nil {
		now = time.Now
	}
	s := &Sessions{tokens: tokens, store: store, accounts: accounts, passwords: passwords, now: now, hasher: NewAppPasswordHasher()}
	ended, err := store.EndedSessions(ctx, now())
	if err != nil {
		return nil, fmt.Errorf("load ended sessions: %w", err)
	}
	s.ended = ended
	return s, nil
}

// Session is the result of a login or refresh.
type Session struct {
	Account    account.Account
	AccessJWT  string
	RefreshJWT string
}

var errBadLogin = pdserr.New(pdserr.AuthRequired, "Invalid identifier or password")

// appPasswordShape matches the xxxx-xxxx-xxxx-xxxx form of app passwords.
var appPasswordShape = regexp.MustCompile(`^[a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4}$`)

// dummyHash is compared against when the identifier is unknown, so that a
// failed login takes as long whether or not the account exists.
var dummyHash = func() string {
	h, _ := HashPassword("not-a-real-password-but-long-enough")
	return h
}()

// Login checks an identifier (handle, any case, or DID) and a password (the
// account password or an app password) and starts a session. Whether the
// identifier exists or not, a failed login costs the same hashing and gets
// the same answer.
func (s *Sessions) Login(ctx context.Context, identifier, password string) (*Session, error) {
	identifier = strings.TrimPrefix(strings.TrimSpace(identifier), "@")
	if identifier == "" || password == "" {
		return nil, pdserr.New(pdserr.InvalidRequest, "identifier and password are required")
	}
	shaped := appPasswordShape.MatchString(password)
	a, err := s.accounts.Resolve(ctx, identifier)
	if err != nil {
		if pe, ok := pdserr.As(err); ok && (pe.Name == pdserr.RepoNotFound || pe.Name == pdserr.InvalidRequest) {
			if shaped {
				_, _ = s.hasher.Hash(ctx, "did:plc:unknown", password)
			}
			CheckPassword(dummyHash, password)
			return nil, errBadLogin
		}
		return nil, err
	}
	var ap *AppPassword
	if shaped {
		h, err := s.hasher.Hash(ctx, a.DID, password)
		if err != nil {
			return nil, err
		}
		found, err := s.store.AppPasswordByHash(ctx, a.DID, h)
		switch {
		case err == nil:
			ap = &found
		case !errors.Is(err, ErrNotFound):
			return nil, fmt.Errorf("find app password: %w", err)
		}
	}
	if ap == nil {
		hash, err := s.passwords.PasswordHash(ctx, a.DID)
		if err != nil {
			return nil, fmt.Errorf("read password hash: %w", err)
		}
		if !CheckPassword(hash, password) {
			return nil, errBadLogin
		}
	}
	// Only a caller who knows a password learns the account's state.
	if a.Status == account.Takendown {
		return nil, pdserr.New(pdserr.AccountTakedown, "Account has been taken down")
	}
	sess, err := s.start(ctx, a, ap)
	if errors.Is(err, ErrRevoked) {
		return nil, errBadLogin // revoked while this login was being checked
	}
	return sess, err
}

func randomID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// start issues the first tokens of a new session.
func (s *Sessions) start(ctx context.Context, a account.Account, ap *AppPassword) (*Session, error) {
	rt := RefreshToken{JTI: randomID(), DID: a.DID, SID: randomID(), ExpiresAt: s.now().Add(RefreshTTL)}
	if ap != nil {
		rt.AppPassword, rt.Privileged = ap.Name, ap.Privileged
	}
	if err := s.store.PutRefresh(ctx, rt); err != nil {
		return nil, fmt.Errorf("store refresh token: %w", err)
	}
	return s.issue(a, rt)
}

func scopeOf(rt RefreshToken) string {
	switch {
	case rt.AppPassword == "":
		return ScopeAccess
	case rt.Privileged:
		return ScopeAppPassPrivileged
	default:
		return ScopeAppPass
	}
}

func (s *Sessions) issue(a account.Account, rt RefreshToken) (*Session, error) {
	access, err := s.tokens.issueAccess(a.DID.String(), scopeOf(rt), rt.SID)
	if err != nil {
		return nil, err
	}
	refresh, err := s.tokens.issueRefresh(a.DID.String(), rt.JTI, rt.SID, rt.ExpiresAt)
	if err != nil {
		return nil, err
	}
	return &Session{Account: a, AccessJWT: access, RefreshJWT: refresh}, nil
}

// Refresh rotates a refresh token: it returns new tokens and retires the
// presented one. Presenting a retired token again within RefreshGrace
// returns the same successor; after that it is refused.
func (s *Sessions) Refresh(ctx context.Context, token string) (*Session, error) {
	c, err := s.tokens.parse(token, typRefresh)
	if err != nil {
		return nil, err
	}
	if c.Scope != ScopeRefresh || c.ID == "" {
		return nil, pdserr.New(pdserr.InvalidToken, "Invalid token type")
	}
	rt, err := s.store.GetRefresh(ctx, c.ID)
	if errors.Is(err, ErrNotFound) {
		return nil, pdserr.New(pdserr.ExpiredToken, "Token has been revoked")
	}
	if err != nil {
		return nil, fmt.Errorf("read refresh token: %w", err)
	}
	a, err := s.accounts.Get(ctx, rt.DID)
	if err != nil {
		return nil, err
	}
	if a.Status == account.Takendown {
		return nil, pdserr.New(pdserr.AccountTakedown, "Account has been taken down")
	}
	now := s.now()
	if rt.NextJTI != "" {
		if now.Sub(rt.RotatedAt) > RefreshGrace {
			return nil, pdserr.New(pdserr.ExpiredToken, "Token has been revoked")
		}
		next, err := s.store.GetRefresh(ctx, rt.NextJTI)
		if err != nil {
			return nil, pdserr.New(pdserr.ExpiredToken, "Token has been revoked")
		}
		return s.issue(a, next)
	}
	next := rt
	next.JTI, next.ExpiresAt, next.NextJTI, next.RotatedAt = randomID(), now.Add(RefreshTTL), "", time.Time{}
	if err := s.store.RotateRefresh(ctx, rt.JTI, next, now); err != nil {
		if errors.Is(err, ErrRevoked) {
			return nil, pdserr.New(pdserr.ExpiredToken, "Token has been revoked")
		}
		if errors.Is(err, ErrNotFound) {
			// A concurrent refresh won the race; answer as a retry would.
			return s.Refresh(ctx, token)
		}
		return nil, fmt.Errorf("rotate refresh token: %w", err)
	}
	return s.issue(a, next)
}

// Logout ends the session of a refresh token: its refresh tokens are
// deleted and its access tokens stop working at once.
func (s *Sessions) Logout(ctx context.Context, token string) error {
	c, err := s.tokens.parse(token, typRefresh)
	if err != nil {
		return err
	}
	if c.Scope != ScopeRefresh || c.SID == "" {
		return pdserr.New(pdserr.InvalidToken, "Invalid token type")
	}
	// Only a token that could still refresh may end the session: an old
	// token, retired past the grace window, is no credential any more.
	rt, err := s.store.GetRefresh(ctx, c.ID)
	if errors.Is(err, ErrNotFound) || (err == nil && rt.NextJTI != "" && s.now().Sub(rt.RotatedAt) > RefreshGrace) {
		return pdserr.New(pdserr.ExpiredToken, "Token has been revoked")
	}
	if err != nil {
		return fmt.Errorf("read refresh token: %w", err)
	}
	until := s.now().Add(AccessTTL)
	if err := s.store.EndSession(ctx, c.SID, until); err != nil {
		return fmt.Errorf("end session: %w", err)
	}
	s.markEnded([]string{c.SID}, until)
	return nil
}

func (s *Sessions) markEnded(sids []string, until time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	for sid, u := range s.ended {
		if now.After(u) {
			delete(s.ended, sid)
		}
	}
	for _, sid := range sids {
		s.ended[sid] = until
	}
}

// Verify checks an access token and returns its principal.
func (s *Sessions) Verify(token string) (*Principal, error) {
	c, err := s.tokens.parse(token, typAccess)
	if err != nil {
		return nil, err
	}
	p := &Principal{DID: syntax.DID(c.Subject)}
	switch c.Scope {
	case ScopeAccess:
		p.Kind = Access
	case ScopeAppPassPrivileged:
		p.Kind, p.Privileged = AppPass, true
	case ScopeAppPass:
		p.Kind = AppPass
	default:
		return nil, pdserr.New(pdserr.InvalidToken, "Bad token scope")
	}
	if c.SID != "" {
		s.mu.RLock()
		_, ended := s.ended[c.SID]
		s.mu.RUnlock()
		if ended {
			return nil, pdserr.New(pdserr.InvalidToken, "Session has ended")
		}
	}
	return p, nil
}

// AppPasswordView is an app password as listed.
type AppPasswordView struct {
	Name       string
	Privileged bool
	CreatedAt  time.Time
}

// NewAppPassword is a freshly created app password, with the password that
// is shown only this once.
type NewAppPassword struct {
	AppPasswordView
	Password string
}

// CreateAppPassword creates a named app password for did.
func (s *Sessions) CreateAppPassword(ctx context.Context, did syntax.DID, name string, privileged bool) (*NewAppPassword, error) {
	name = strings.TrimSpace(name)
	switch {
	case name == "":
		return nil, pdserr.New(pdserr.InvalidRequest, "name is required")
	case utf8.RuneCountInString(name) > MaxAppPasswordName:
		return nil, pdserr.New(pdserr.InvalidRequest, "name must be at most %d characters", MaxAppPasswordName)
	}
	pw := GeneratePassword()
	h, err := s.hasher.Hash(ctx, did, pw)
	if err != nil {
		return nil, err
	}
	ap := AppPassword{DID: did, Name: name, Hash: h, Privileged: privileged, CreatedAt: s.now().UTC().Truncate(time.Millisecond)}
	if err := s.store.CreateAppPassword(ctx, ap); err != nil {
		if errors.Is(err, ErrDuplicate) {
			return nil, pdserr.New(pdserr.DuplicateName, "App password name already exists: %s", name)
		}
		return nil, fmt.Errorf("create app password: %w", err)
	}
	return &NewAppPassword{AppPasswordView: AppPasswordView{Name: name, Privileged: privileged, CreatedAt: ap.CreatedAt}, Password: pw}, nil
}

// ListAppPasswords lists did's app passwords, newest first.
func (s *Sessions) ListAppPasswords(ctx context.Context, did syntax.DID) ([]AppPasswordView, error) {
	aps, err := s.store.AppPasswords(ctx, did)
	if err != nil {
		return nil, fmt.Errorf("list app passwords: %w", err)
	}
	out := make([]AppPasswordView, len(aps))
	for i, ap := range aps {
		out[i] = AppPasswordView{Name: ap.Name, Privileged: ap.Privileged, CreatedAt: ap.CreatedAt}
	}
	return out, nil
}

// RevokeAppPassword deletes an app password and ends every session that
// was opened with it, effective immediately. It returns how many live
// sessions were ended.
func (s *Sessions) RevokeAppPassword(ctx context.Context, did syntax.DID, name string) (int, error) {
	name = strings.TrimSpace(name)
	if name == "" {
		return 0, pdserr.New(pdserr.InvalidRequest, "name is required")
	}
	now := s.now()
	until := now.Add(AccessTTL)
	sids, err := s.store.DeleteAppPassword(ctx, did, name, now, until)
	if errors.Is(err, ErrNotFound) {
		return 0, pdserr.New(pdserr.InvalidRequest, "App password not found: %s", name)
	}
	if err != nil {
		return 0, fmt.Errorf("revoke app password: %w", err)
	}
	s.markEnded(sids, until)
	return len(sids), nil
}

// RotateSecret replaces the token secret and ends every session. It
// returns how many live sessions were ended.
func (s *Sessions) RotateSecret(ctx context.Context, secret string) (int, error) {
	now := s.now()
	until := now.Add(AccessTTL)
	sids, err := s.store.EndAllSessions(ctx, now, until)
	if err != nil {
		return 0, fmt.Errorf("end sessions: %w", err)
	}
	s.tokens.SetSecret(secret)
	s.markEnded(sids, until)
	return len(sids), nil
}

// Prune deletes expired records.
func (s *Sessions) Prune(ctx context.Context) error {
	s.markEnded(nil, time.Time{})
	return s.store.Prune(ctx, s.now())
}
