package auth_test

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"golang.org/x/crypto/bcrypt"

	"stratus/internal/account"
	"stratus/internal/auth"
	"stratus/internal/pdserr"
	"stratus/internal/sqlite"
)

const (
	testDID      = syntax.DID("did:web:pds.test")
	testHandle   = "alice.test"
	testPassword = "correct-password"
	testAudience = "did:web:pds.test"
)

// clock is a fake clock. With tick set, every reading advances it.
type clock struct {
	mu   sync.Mutex
	t    time.Time
	tick time.Duration
}

func newClock() *clock {
	return &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.t
	c.t = c.t.Add(c.tick)
	return now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// passwords implements auth.Passwords.
type passwords map[syntax.DID]string

func (p passwords) PasswordHash(_ context.Context, did syntax.DID) (string, error) {
	h, ok := p[did]
	if !ok {
		return "", fmt.Errorf("no password for %s", did)
	}
	return h, nil
}

// env is a session service over a real SQLite store and a fake clock.
type env struct {
	t        *testing.T
	ctx      context.Context
	db       *sqlite.DB
	path     string
	clock    *clock
	accounts *account.Service
	store    auth.SessionStore
	pw       passwords
	sessions *auth.Sessions
}

var (
	hashOnce sync.Once
	hash     string
)

func passwordHash(t *testing.T) string {
	hashOnce.Do(func() {
		h, err := bcrypt.GenerateFromPassword([]byte(testPassword), bcrypt.MinCost)
		if err != nil {
			panic(err)
		}
		hash = string(h)
	})
	return hash
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "pds.sqlite")
	db, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	c := newClock()
	e := &env{t: t, ctx: ctx, db: db, path: path, clock: c, store: db.Sessions(), pw: passwords{}}
	e.accounts = account.NewService(db.Accounts(), nil, c.Now)
	e.addAccount(testDID, testHandle, account.Active)
	e.restart()
	return e
}

func (e *env) addAccount(did syntax.DID, handle string, status account.Status) {
	e.t.Helper()
	err := e.db.Accounts().Create(e.ctx, account.Account{DID: did, Handle: syntax.Handle(handle), Email: "x@pds.test", Status: status, CreatedAt: e.clock.Now()})
	if err != nil {
		e.t.Fatal(err)
	}
	e.pw[did] = passwordHash(e.t)
}

// restart builds a new session service on the same store, as a process
// restart would.
func (e *env) restart() {
	e.t.Helper()
	tokens := auth.NewTokens("test-secret-0123456789", testAudience, e.clock.Now)
	s, err := auth.NewSessions(e.ctx, tokens, e.store, e.accounts, e.pw, e.clock.Now)
	if err != nil {
		e.t.Fatal(err)
	}
	e.sessions = s
}

func (e *env) login() *auth.Session {
	e.t.Helper()
	s, err := e.sessions.Login(e.ctx, testHandle, testPassword)
	if err != nil {
		e.t.Fatalf("login: %v", err)
	}
	return s
}

func (e *env) refresh(tok string) *auth.Session {
	e.t.Helper()
	s, err := e.sessions.Refresh(e.ctx, tok)
	if err != nil {
		e.t.Fatalf("refresh: %v", err)
	}
	return s
}

// count returns the number of rows of a table, read through a second
// connection.
func (e *env) count(table string) int {
	e.t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.ToSlash(e.path)+"?_pragma=busy_timeout(10000)")
	if err != nil {
		e.t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow("SELECT count(*) FROM " + table).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

func claims(t *testing.T, tok string) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts", len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

func jti(t *testing.T, tok string) string {
	t.Helper()
	j, _ := claims(t, tok)["jti"].(string)
	if j == "" {
		t.Fatalf("token has no jti")
	}
	return j
}

func wantErr(t *testing.T, err error, name string) {
	t.Helper()
	if !pdserr.Is(err, name) {
		t.Fatalf("err = %v, want %s", err, name)
	}
}

func TestRefreshGrace(t *testing.T) {
	e := newEnv(t)
	first := e.login()
	e.clock.Advance(10 * time.Minute)
	next := e.refresh(first.RefreshJWT) // rotated at +10m
	if jti(t, next.RefreshJWT) == jti(t, first.RefreshJWT) {
		t.Fatal("refresh kept the jti")
	}

	e.clock.Advance(time.Hour)
	retry := e.refresh(first.RefreshJWT)
	if jti(t, retry.RefreshJWT) != jti(t, next.RefreshJWT) {
		t.Fatalf("retry at +1h got jti %s, want the successor %s", jti(t, retry.RefreshJWT), jti(t, next.RefreshJWT))
	}
	if _, err := e.sessions.Verify(retry.AccessJWT); err != nil {
		t.Fatalf("access token of the retry: %v", err)
	}
	// The successor's expiry is its own, not renewed by the retry.
	if claims(t, retry.RefreshJWT)["exp"] != claims(t, next.RefreshJWT)["exp"] {
		t.Errorf("retry changed the successor's expiry")
	}

	// Exactly at the end of the window it is still honoured; a second
	// later it is not, after a restart too.
	e.clock.Advance(time.Hour)
	if got := e.refresh(first.RefreshJWT); jti(t, got.RefreshJWT) != jti(t, next.RefreshJWT) {
		t.Fatalf("retry at +2h got another successor")
	}
	e.clock.Advance(time.Second)
	_, err := e.sessions.Refresh(e.ctx, first.RefreshJWT)
	wantErr(t, err, pdserr.ExpiredToken)
	e.restart()
	_, err = e.sessions.Refresh(e.ctx, first.RefreshJWT)
	wantErr(t, err, pdserr.ExpiredToken)

	// The successor itself still rotates.
	third := e.refresh(next.RefreshJWT)
	if j := jti(t, third.RefreshJWT); j == jti(t, next.RefreshJWT) || j == jti(t, first.RefreshJWT) {
		t.Fatalf("successor did not rotate")
	}
}

func TestTokenExpiry(t *testing.T) {
	e := newEnv(t)
	s := e.login()
	e.clock.Advance(119 * time.Minute)
	p, err := e.sessions.Verify(s.AccessJWT)
	if err != nil || p.Kind != auth.Access || p.DID != testDID {
		t.Fatalf("access token at +119m: %v, %v", p, err)
	}
	e.clock.Advance(2 * time.Minute)
	_, err = e.sessions.Verify(s.AccessJWT)
	wantErr(t, err, pdserr.ExpiredToken)

	// The refresh token outlives it and brings a fresh access token.
	n := e.refresh(s.RefreshJWT)
	if _, err := e.sessions.Verify(n.AccessJWT); err != nil {
		t.Fatalf("refreshed access token: %v", err)
	}

	// Refresh tokens expire after 90 days.
	s2 := e.login()
	e.clock.Advance(90*24*time.Hour - time.Second)
	e.refresh(s2.RefreshJWT)
	s3 := e.login()
	e.clock.Advance(90*24*time.Hour + time.Second)
	_, err = e.sessions.Refresh(e.ctx, s3.RefreshJWT)
	wantErr(t, err, pdserr.ExpiredToken)
}

func TestRefreshTokenLifetimeExact(t *testing.T) {
	e := newEnv(t)
	e.clock.tick = 700 * time.Millisecond
	s := e.login()
	c := claims(t, s.RefreshJWT)
	if d := int64(c["exp"].(float64) - c["iat"].(float64)); d != int64(auth.RefreshTTL/time.Second) {
		t.Errorf("refresh exp-iat = %ds, want %ds", d, int64(auth.RefreshTTL/time.Second))
	}
	c = claims(t, s.AccessJWT)
	if d := int64(c["exp"].(float64) - c["iat"].(float64)); d != int64(auth.AccessTTL/time.Second) {
		t.Errorf("access exp-iat = %ds, want %ds", d, int64(auth.AccessTTL/time.Second))
	}
}

func TestEndedSessions(t *testing.T) {
	e := newEnv(t)
	gone := e.login()
	kept := e.login()
	if err := e.sessions.Logout(e.ctx, gone.RefreshJWT); err != nil {
		t.Fatal(err)
	}
	_, err := e.sessions.Verify(gone.AccessJWT)
	wantErr(t, err, pdserr.InvalidToken)
	_, err = e.sessions.Refresh(e.ctx, gone.RefreshJWT)
	wantErr(t, err, pdserr.ExpiredToken)
	if _, err := e.sessions.Verify(kept.AccessJWT); err != nil {
		t.Fatalf("other session: %v", err)
	}
	if n := e.count("revoked_sessions"); n != 1 {
		t.Fatalf("%d ended-session rows, want 1", n)
	}

	// The ended session is remembered across a restart while its access
	// tokens may still be valid.
	e.clock.Advance(time.Hour)
	e.restart()
	_, err = e.sessions.Verify(gone.AccessJWT)
	wantErr(t, err, pdserr.InvalidToken)
	if err := e.sessions.Prune(e.ctx); err != nil {
		t.Fatal(err)
	}
	if n := e.count("revoked_sessions"); n != 1 {
		t.Fatalf("pruned an ended session whose tokens are still valid")
	}

	// Once every access token of it has expired, the record goes.
	e.clock.Advance(time.Hour + time.Second)
	if err := e.sessions.Prune(e.ctx); err != nil {
		t.Fatal(err)
	}
	if n := e.count("revoked_sessions"); n != 0 {
		t.Fatalf("%d ended-session rows after pruning, want 0", n)
	}
	_, err = e.sessions.Verify(gone.AccessJWT)
	wantErr(t, err, pdserr.ExpiredToken)
	e.restart()
	_, err = e.sessions.Verify(gone.AccessJWT)
	wantErr(t, err, pdserr.ExpiredToken)
}

func TestPruneRefreshTokens(t *testing.T) {
	e := newEnv(t)
	a := e.login()
	a2 := e.refresh(a.RefreshJWT)
	b := e.login()
	if n := e.count("refresh_tokens"); n != 3 {
		t.Fatalf("%d refresh tokens, want 3", n)
	}
	// Within the grace window the rotated token is kept.
	e.clock.Advance(time.Hour)
	if err := e.sessions.Prune(e.ctx); err != nil {
		t.Fatal(err)
	}
	if n := e.count("refresh_tokens"); n != 3 {
		t.Fatalf("%d refresh tokens after an early prune, want 3", n)
	}
	e.clock.Advance(time.Hour + time.Second)
	if err := e.sessions.Prune(e.ctx); err != nil {
		t.Fatal(err)
	}
	if n := e.count("refresh_tokens"); n != 2 {
		t.Fatalf("%d refresh tokens after the grace window, want 2", n)
	}
	_, err := e.sessions.Refresh(e.ctx, a.RefreshJWT)
	wantErr(t, err, pdserr.ExpiredToken)
	a3 := e.refresh(a2.RefreshJWT)
	// Expired tokens go too.
	e.clock.Advance(91 * 24 * time.Hour)
	if err := e.sessions.Prune(e.ctx); err != nil {
		t.Fatal(err)
	}
	if n := e.count("refresh_tokens"); n != 0 {
		t.Fatalf("%d refresh tokens after expiry, want 0", n)
	}
	for _, tok := range []string{a3.RefreshJWT, b.RefreshJWT} {
		_, err := e.sessions.Refresh(e.ctx, tok)
		wantErr(t, err, pdserr.ExpiredToken)
	}
}

func TestConcurrentRefresh(t *testing.T) {
	e := newEnv(t)
	s := e.login()
	if n := e.count("refresh_tokens"); n != 1 {
		t.Fatalf("%d refresh tokens, want 1", n)
	}
	const n = 10
	var wg sync.WaitGroup
	jtis := make([]string, n)
	errs := make([]error, n)
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			got, err := e.sessions.Refresh(e.ctx, s.RefreshJWT)
			if err != nil {
				errs[i] = err
				return
			}
			jtis[i] = jti(t, got.RefreshJWT)
			if _, err := e.sessions.Verify(got.AccessJWT); err != nil {
				errs[i] = err
			}
		}()
	}
	close(start)
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Errorf("refresh %d: %v", i, errs[i])
		}
		if jtis[i] != jtis[0] {
			t.Errorf("refresh %d got jti %s, refresh 0 got %s", i, jtis[i], jtis[0])
		}
	}
	if jtis[0] == jti(t, s.RefreshJWT) {
		t.Errorf("no rotation")
	}
	if c := e.count("refresh_tokens"); c != 2 {
		t.Errorf("%d refresh tokens after %d concurrent refreshes, want 2 (one successor)", c, n)
	}
}

func TestAppPasswordSessions(t *testing.T) {
	e := newEnv(t)
	ap, err := e.sessions.CreateAppPassword(e.ctx, testDID, " phone ", false)
	if err != nil {
		t.Fatal(err)
	}
	if ap.Name != "phone" || ap.Privileged {
		t.Errorf("created %+v", ap.AppPasswordView)
	}
	priv, err := e.sessions.CreateAppPassword(e.ctx, testDID, "chat", true)
	if err != nil {
		t.Fatal(err)
	}
	s, err := e.sessions.Login(e.ctx, testHandle, ap.Password)
	if err != nil {
		t.Fatal(err)
	}
	p, err := e.sessions.Verify(s.AccessJWT)
	if err != nil || p.Kind != auth.AppPass || p.Privileged || p.Owner() {
		t.Fatalf("app password principal %+v, %v", p, err)
	}
	sp, err := e.sessions.Login(e.ctx, testDID.String(), priv.Password)
	if err != nil {
		t.Fatal(err)
	}
	p, err = e.sessions.Verify(sp.AccessJWT)
	if err != nil || p.Kind != auth.AppPass || !p.Privileged || p.Owner() {
		t.Fatalf("privileged app password principal %+v, %v", p, err)
	}
	// Rotation keeps the kind.
	r := e.refresh(s.RefreshJWT)
	if p, err := e.sessions.Verify(r.AccessJWT); err != nil || p.Kind != auth.AppPass {
		t.Fatalf("refreshed app password session %+v, %v", p, err)
	}

	n, err := e.sessions.RevokeAppPassword(e.ctx, testDID, "phone")
	if err != nil || n != 1 {
		t.Fatalf("revoke: %d, %v", n, err)
	}
	for _, tok := range []string{s.AccessJWT, r.AccessJWT} {
		_, err := e.sessions.Verify(tok)
		wantErr(t, err, pdserr.InvalidToken)
	}
	_, err = e.sessions.Refresh(e.ctx, r.RefreshJWT)
	wantErr(t, err, pdserr.ExpiredToken)
	_, err = e.sessions.Refresh(e.ctx, s.RefreshJWT)
	wantErr(t, err, pdserr.ExpiredToken)
	_, err = e.sessions.Login(e.ctx, testHandle, ap.Password)
	wantErr(t, err, pdserr.AuthRequired)
	if _, err := e.sessions.Verify(sp.AccessJWT); err != nil {
		t.Errorf("other app password's session: %v", err)
	}
	e.restart()
	_, err = e.sessions.Verify(r.AccessJWT)
	wantErr(t, err, pdserr.InvalidToken)
}

// racyStore revokes an app password right after Login has read the app
// passwords, as a revokeAppPassword request arriving during the bcrypt
// comparison would.
type racyStore struct {
	auth.SessionStore
	once   sync.Once
	revoke func()
}

func (s *racyStore) AppPasswordByHash(ctx context.Context, did syntax.DID, hash string) (auth.AppPassword, error) {
	ap, err := s.SessionStore.AppPasswordByHash(ctx, did, hash)
	s.once.Do(s.revoke)
	return ap, err
}

func TestRevokeDuringLogin(t *testing.T) {
	e := newEnv(t)
	ap, err := e.sessions.CreateAppPassword(e.ctx, testDID, "phone", false)
	if err != nil {
		t.Fatal(err)
	}
	racy := &racyStore{SessionStore: e.store}
	e.store = racy
	e.restart()
	racy.revoke = func() {
		if _, err := e.sessions.RevokeAppPassword(e.ctx, testDID, "phone"); err != nil {
			t.Errorf("revoke: %v", err)
		}
	}
	s, err := e.sessions.Login(e.ctx, testHandle, ap.Password)
	if err != nil {
		return // refused: fine
	}
	if _, err := e.sessions.Refresh(e.ctx, s.RefreshJWT); err == nil {
		t.Errorf("a session opened with a revoked app password can still refresh")
	}
}

func TestAppPasswordListOrder(t *testing.T) {
	e := newEnv(t)
	for _, name := range []string{"a", "b"} {
		if _, err := e.sessions.CreateAppPassword(e.ctx, testDID, name, false); err != nil {
			t.Fatal(err)
		}
	}
	l, err := e.sessions.ListAppPasswords(e.ctx, testDID)
	if err != nil {
		t.Fatal(err)
	}
	if len(l) != 2 || l[0].Name != "b" {
		t.Errorf("listed %+v, want b (newest) first", l)
	}
}

func TestLoginIdentifiers(t *testing.T) {
	e := newEnv(t)
	for _, id := range []string{testHandle, "ALICE.TEST", "@alice.test", " alice.test ", testDID.String(), "@" + testDID.String()} {
		if _, err := e.sessions.Login(e.ctx, id, testPassword); err != nil {
			t.Errorf("login as %q: %v", id, err)
		}
	}
	for _, c := range []struct{ id, pw string }{
		{"bob.test", testPassword},
		{"did:web:bob.test", testPassword},
		{"%%%", testPassword},
		{testHandle, "wrong-password"},
	} {
		_, err := e.sessions.Login(e.ctx, c.id, c.pw)
		wantErr(t, err, pdserr.AuthRequired)
	}
	for _, c := range []struct{ id, pw string }{{"", testPassword}, {testHandle, ""}, {"  ", testPassword}} {
		_, err := e.sessions.Login(e.ctx, c.id, c.pw)
		wantErr(t, err, pdserr.InvalidRequest)
	}
}

func TestLoginCaseSensitiveDID(t *testing.T) {
	e := newEnv(t)
	did := syntax.DID("did:web:example.com:users:Bob")
	e.addAccount(did, "bob.test", account.Active)
	if _, err := e.sessions.Login(e.ctx, did.String(), testPassword); err != nil {
		t.Errorf("login as %s: %v", did, err)
	}
}

func TestLoginTakendownNeedsPassword(t *testing.T) {
	e := newEnv(t)
	e.addAccount("did:web:gone.test", "gone.test", account.Takendown)
	_, err := e.sessions.Login(e.ctx, "gone.test", "wrong-password")
	wantErr(t, err, pdserr.AuthRequired)
}

func TestLoginTakendown(t *testing.T) {
	e := newEnv(t)
	e.addAccount("did:web:gone.test", "gone.test", account.Takendown)
	_, err := e.sessions.Login(e.ctx, "gone.test", testPassword)
	wantErr(t, err, pdserr.AccountTakedown)
}

func TestRotateSecret(t *testing.T) {
	e := newEnv(t)
	a := e.login()
	b := e.login()
	if err := e.sessions.Logout(e.ctx, b.RefreshJWT); err != nil {
		t.Fatal(err)
	}
	n, err := e.sessions.RotateSecret(e.ctx, "another-secret-0123456789")
	if err != nil || n != 1 {
		t.Fatalf("RotateSecret: %d, %v", n, err)
	}
	_, err = e.sessions.Verify(a.AccessJWT)
	wantErr(t, err, pdserr.InvalidToken)
	_, err = e.sessions.Refresh(e.ctx, a.RefreshJWT)
	wantErr(t, err, pdserr.InvalidToken)
	c := e.login()
	if _, err := e.sessions.Verify(c.AccessJWT); err != nil {
		t.Fatalf("new session: %v", err)
	}
	e.refresh(c.RefreshJWT)
}

// A verified access token is remembered for speed; ending its session,
// rotating the secret and its expiry must still reject it.
func TestVerifyCachedToken(t *testing.T) {
	e := newEnv(t)
	ended, rotated := e.login(), e.login()
	for _, s := range []*auth.Session{ended, rotated} {
		for range 2 {
			if _, err := e.sessions.Verify(s.AccessJWT); err != nil {
				t.Fatalf("Verify: %v", err)
			}
		}
	}
	// A token that differs in one character of its signature is not
	// taken for the cached one.
	i := len(ended.AccessJWT) - 10
	c := byte('A')
	if ended.AccessJWT[i] == c {
		c = 'B'
	}
	forged := ended.AccessJWT[:i] + string(c) + ended.AccessJWT[i+1:]
	_, err := e.sessions.Verify(forged)
	wantErr(t, err, pdserr.InvalidToken)

	if err := e.sessions.Logout(e.ctx, ended.RefreshJWT); err != nil {
		t.Fatal(err)
	}
	_, err = e.sessions.Verify(ended.AccessJWT)
	wantErr(t, err, pdserr.InvalidToken)

	e.clock.Advance(121 * time.Minute)
	_, err = e.sessions.Verify(rotated.AccessJWT)
	wantErr(t, err, pdserr.ExpiredToken)

	fresh := e.login()
	if _, err := e.sessions.Verify(fresh.AccessJWT); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if _, err := e.sessions.RotateSecret(e.ctx, "another-secret-0123456789"); err != nil {
		t.Fatal(err)
	}
	_, err = e.sessions.Verify(fresh.AccessJWT)
	wantErr(t, err, pdserr.InvalidToken)
}
