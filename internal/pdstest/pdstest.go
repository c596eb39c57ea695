// Package pdstest starts real Stratus servers for tests: a temporary data
// directory, a complete configuration with fresh keys and secrets, and a
// server listening on a free loopback port, closed when the test ends.
//
// The account lives at a fixed public origin (https://pds.test by default,
// DID did:web:pds.test, handle alice.test) while the server itself binds
// 127.0.0.1:0. The server never contacts its own public URL, so nothing has
// to resolve pds.test; clients reach it through URL().
//
// Helpers (Do, Call, MustError, Raw) speak XRPC over real HTTP and fail the
// test on transport errors, so test bodies only state expectations.
package pdstest

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"golang.org/x/crypto/bcrypt"

	"stratus/internal/auth"
	"stratus/internal/config"
	"stratus/internal/server"
	"stratus/internal/sqlite"
)

// Defaults of a test server.
const (
	// DefaultHostname is the public hostname of a test server.
	DefaultHostname = "pds.test"
	// DefaultHandle is the handle of the test account.
	DefaultHandle = "alice.test"
	// Password is the account password whose bcrypt hash is configured.
	Password = "pdstest-password"
)

// Option changes how NewServer configures the server.
type Option func(*options)

type options struct {
	hostname        string
	handle          string
	didMethod       string
	initiallyActive bool
	userDomains     []string
	logger          *slog.Logger
	configure       []func(*config.Config)
	serverOpts      server.Options
}

// WithHostname sets the public hostname; the public URL becomes
// https://<hostname> and a did:web account becomes did:web:<hostname>.
func WithHostname(hostname string) Option {
	return func(o *options) { o.hostname = hostname }
}

// WithHandle sets the handle of the hosted account.
func WithHandle(handle string) Option {
	return func(o *options) { o.handle = handle }
}

// WithDIDMethod chooses the account's DID method: "web" (the default,
// did:web:<hostname>) or "plc" (a random, unregistered did:plc; the server
// does not contact a PLC directory to serve it).
func WithDIDMethod(method string) Option {
	return func(o *options) { o.didMethod = method }
}

// WithInitiallyActive sets whether the account is active when first
// created (default true).
func WithInitiallyActive(active bool) Option {
	return func(o *options) { o.initiallyActive = active }
}

// WithUserDomains sets the handle suffixes describeServer offers.
func WithUserDomains(domains ...string) Option {
	return func(o *options) { o.userDomains = domains }
}

// WithLogger sends the server's logs to l instead of the test log.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.logger = l }
}

// WithConfig runs fn on the generated configuration before the server
// opens, for settings no other option covers.
func WithConfig(fn func(*config.Config)) Option {
	return func(o *options) { o.configure = append(o.configure, fn) }
}

// WithLoopbackServices lets the server reach services on loopback
// addresses over plain HTTP (stand-in AppViews, DID documents pointing at
// httptest servers). Off by default, as in production, where the SSRF
// guard refuses such addresses.
func WithLoopbackServices() Option {
	return func(o *options) {
		o.serverOpts.Outbound.AllowHTTP = true
		o.serverOpts.Outbound.AllowPrivate = true
	}
}

// WithServerOptions changes the server's test-only options.
func WithServerOptions(fn func(*server.Options)) Option {
	return func(o *options) { fn(&o.serverOpts) }
}

// Server is a running test server.
type Server struct {
	cfg    *config.Config
	opts   server.Options
	pub    atcrypto.PublicKey
	log    *slog.Logger
	client *http.Client

	mu  sync.Mutex
	srv *server.Server
	url string
}

var (
	hashOnce sync.Once
	hash     string
	hashErr  error
)

// passwordHash hashes Password once per test binary, at bcrypt's minimum
// cost: bcrypt is slow on purpose (seconds under the race detector at the
// default cost), and the hash only has to be a valid one.
func passwordHash() (string, error) {
	hashOnce.Do(func() {
		var h []byte
		h, hashErr = bcrypt.GenerateFromPassword([]byte(Password), bcrypt.MinCost)
		hash = string(h)
		if hashErr == nil && !auth.CheckPassword(hash, Password) {
			hashErr = fmt.Errorf("bcrypt hash does not verify")
		}
	})
	return hash, hashErr
}

// NewServer configures, opens and starts a server on a fresh data
// directory, and closes it when the test ends.
func NewServer(tb testing.TB, opts ...Option) *Server {
	tb.Helper()
	o := options{hostname: DefaultHostname, handle: DefaultHandle, didMethod: "web", initiallyActive: true}
	for _, opt := range opts {
		opt(&o)
	}
	cfg, pub, err := newConfig(tb.TempDir(), o)
	if err != nil {
		tb.Fatalf("pdstest: %v", err)
	}
	// The data directory holds settings.json and secrets.json, as after
	// `pds init`: the operator's rotations update them in place, and
	// Restart reads them back.
	if err := cfg.Save(); err != nil {
		tb.Fatalf("pdstest: save config: %v", err)
	}
	log := o.logger
	if log == nil {
		w := &tbWriter{tb: tb}
		// Registered before the server's own cleanup, so it runs after it:
		// lines logged while the server closes still reach the test log.
		tb.Cleanup(w.stop)
		log = slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	s := &Server{
		opts: o.serverOpts,
		cfg:  cfg,
		pub:  pub,
		log:  log,
		client: &http.Client{
			Timeout: 60 * time.Second,
			Transport: &http.Transport{
				MaxIdleConnsPerHost: 32,
				IdleConnTimeout:     30 * time.Second,
			},
		},
	}
	if err := s.start(); err != nil {
		tb.Fatalf("pdstest: %v", err)
	}
	tb.Cleanup(func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.srv != nil {
			if err := s.srv.Close(); err != nil {
				tb.Errorf("pdstest: close server: %v", err)
			}
			s.srv = nil
		}
		s.client.CloseIdleConnections()
	})
	return s
}

// newConfig builds a complete, valid configuration in dir.
func newConfig(dir string, o options) (*config.Config, atcrypto.PublicKey, error) {
	key, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		return nil, nil, fmt.Errorf("generate signing key: %w", err)
	}
	pub, err := key.PublicKey()
	if err != nil {
		return nil, nil, fmt.Errorf("signing key: %w", err)
	}
	pw, err := passwordHash()
	if err != nil {
		return nil, nil, fmt.Errorf("hash password: %w", err)
	}
	publicURL := "https://" + o.hostname
	var did string
	switch o.didMethod {
	case "web", "":
		did = config.WebDID(publicURL).String()
	case "plc":
		// did:plc identifiers are 24 characters of base32 (a-z, 2-7); a
		// random one stands in for a registered account.
		did = "did:plc:" + auth.GenerateToken()[:24]
	default:
		return nil, nil, fmt.Errorf("unknown DID method %q", o.didMethod)
	}
	cfg := config.Default(dir)
	cfg.Hostname = o.hostname
	cfg.PublicURL = publicURL
	cfg.Port = 0
	cfg.Bind = "127.0.0.1"
	cfg.DID = did
	cfg.Handle = o.handle
	cfg.Email = "alice@" + o.hostname
	cfg.InitiallyActive = o.initiallyActive
	cfg.SigningKeyPublic = pub.DIDKey()
	cfg.UserDomains = o.userDomains
	cfg.SigningKey = config.EncodeKey(key)
	cfg.JWTSecret = auth.GenerateToken()
	cfg.AdminToken = auth.GenerateToken()
	cfg.PasswordHash = pw
	for _, fn := range o.configure {
		fn(cfg)
	}
	if err := cfg.Validate(); err != nil {
		return nil, nil, err
	}
	return cfg, pub, nil
}

// start opens and starts the server. Callers hold no lock.
func (s *Server) start() error {
	// The context bounds opening only (migrations, genesis commit), so a
	// stuck database fails the test instead of hanging it.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, err := server.OpenWith(ctx, s.cfg, s.log, s.opts)
	if err != nil {
		return fmt.Errorf("open server: %w", err)
	}
	if err := srv.Start(); err != nil {
		srv.Close()
		return fmt.Errorf("start server: %w", err)
	}
	s.mu.Lock()
	s.srv = srv
	s.url = "http://127.0.0.1:" + strconv.Itoa(srv.Port())
	s.mu.Unlock()
	return nil
}

// Restart closes the server and opens and starts it again on the same data
// directory, with the configuration read back from its settings.json and
// secrets.json, as a process restart would: secrets the operator rotated
// survive only if the server saved them. The new server listens on a new
// port: read URL() again afterwards.
func (s *Server) Restart(tb testing.TB) {
	tb.Helper()
	s.mu.Lock()
	old := s.srv
	s.srv = nil
	s.mu.Unlock()
	if old != nil {
		if err := old.Close(); err != nil {
			tb.Fatalf("pdstest: close server for restart: %v", err)
		}
	}
	s.client.CloseIdleConnections()
	cfg, err := config.Load(s.cfg.DataDir)
	if err != nil {
		tb.Fatalf("pdstest: reload config for restart: %v", err)
	}
	// The closed server no longer touches s.cfg; keep the pointer, which
	// the accessors read.
	*s.cfg = *cfg
	if err := s.start(); err != nil {
		tb.Fatalf("pdstest: restart: %v", err)
	}
}

// Server returns the running server, for tests that need its services.
func (s *Server) Server() *server.Server {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.srv
}

// URL returns the base URL the server listens on, http://127.0.0.1:<port>.
func (s *Server) URL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.url
}

// PublicURL returns the configured public origin (https://pds.test by
// default), which appears in DID documents; it is not reachable.
func (s *Server) PublicURL() string { return s.cfg.PublicURL }

// Hostname returns the configured public hostname.
func (s *Server) Hostname() string { return s.cfg.Hostname }

// DID returns the DID of the hosted account.
func (s *Server) DID() string { return s.cfg.DID }

// Handle returns the handle of the hosted account.
func (s *Server) Handle() string { return s.cfg.Handle }

// AdminToken returns the operator's bearer token.
func (s *Server) AdminToken() string { return s.cfg.AdminToken }

// SigningKey returns the public key that signs the account's commits.
func (s *Server) SigningKey() atcrypto.PublicKey { return s.pub }

// DataDir returns the server's data directory.
func (s *Server) DataDir() string { return s.cfg.DataDir }

// Config returns a copy of the server's configuration.
func (s *Server) Config() config.Config {
	c := *s.cfg
	c.UserDomains = append([]string(nil), s.cfg.UserDomains...)
	return c
}

// Client returns the HTTP client the helpers use.
func (s *Server) Client() *http.Client { return s.client }

// Raw sends a request to path (relative to URL(), e.g. "/xrpc/_health")
// and returns the response with its body read and closed. header may be
// nil. It fails the test only on transport errors.
func (s *Server) Raw(tb testing.TB, method, path string, header http.Header, body io.Reader) (*http.Response, []byte) {
	tb.Helper()
	req, err := http.NewRequest(method, s.URL()+path, body)
	if err != nil {
		tb.Fatalf("pdstest: build request %s %s: %v", method, path, err)
	}
	for k, vs := range header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	if h := header.Get("Host"); h != "" {
		req.Host = h
	}
	resp, err := s.client.Do(req)
	if err != nil {
		tb.Fatalf("pdstest: %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("pdstest: read response of %s %s: %v", method, path, err)
	}
	return resp, b
}

// Do calls the XRPC method nsid and returns the status and body. query may
// be nil. Do (like Raw and Call) is safe for concurrent use; note that the
// Fatalf it calls on a transport error only ends the calling goroutine when
// that is not the test's own. body is sent as JSON: nil sends no body, []byte and
// json.RawMessage are sent verbatim, anything else is marshalled. A
// non-empty token is sent as "Authorization: Bearer <token>".
func (s *Server) Do(tb testing.TB, method, nsid string, query url.Values, body any, token string) (status int, respBody []byte) {
	tb.Helper()
	path := "/xrpc/" + nsid
	if len(query) > 0 {
		path += "?" + query.Encode()
	}
	var r io.Reader
	header := http.Header{}
	if body != nil {
		var b []byte
		switch v := body.(type) {
		case []byte:
			b = v
		case json.RawMessage:
			b = v
		default:
			var err error
			if b, err = json.Marshal(body); err != nil {
				tb.Fatalf("pdstest: encode body of %s: %v", nsid, err)
			}
		}
		r = bytes.NewReader(b)
		header.Set("Content-Type", "application/json")
	}
	if token != "" {
		header.Set("Authorization", "Bearer "+token)
	}
	resp, b := s.Raw(tb, method, path, header, r)
	return resp.StatusCode, b
}

// Call is Do that fails the test unless the answer is 200, and decodes a
// JSON answer into out when out is not nil.
func (s *Server) Call(tb testing.TB, method, nsid string, query url.Values, body any, token string, out any) {
	tb.Helper()
	status, b := s.Do(tb, method, nsid, query, body, token)
	if status != http.StatusOK {
		tb.Fatalf("%s %s: status %d, want 200: %s", method, nsid, status, truncate(b))
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			tb.Fatalf("%s %s: decode answer: %v: %s", method, nsid, err, truncate(b))
		}
	}
}

// ErrorEnvelope is the body of an XRPC error.
type ErrorEnvelope struct {
	Error   string `json:"error"`
	Message string `json:"message"`
}

// MustError asserts that an answer (status, body) is an XRPC error
// envelope {"error": name, "message": ...} with wantStatus, and returns the
// decoded envelope. An empty wantName accepts any error name.
func MustError(tb testing.TB, status int, body []byte, wantStatus int, wantName string) ErrorEnvelope {
	tb.Helper()
	env, err := ParseError(body)
	if err != nil {
		tb.Fatalf("status %d: %v", status, err)
	}
	if status != wantStatus || (wantName != "" && env.Error != wantName) {
		tb.Fatalf("got %d %s (%q), want %d %s", status, env.Error, env.Message, wantStatus, wantName)
	}
	return env
}

// ParseError decodes an XRPC error envelope, reporting an error if body is
// not a JSON object with a non-empty string "error" and an optional string
// "message".
func ParseError(body []byte) (ErrorEnvelope, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		return ErrorEnvelope{}, fmt.Errorf("answer is not a JSON object: %v: %s", err, truncate(body))
	}
	var env ErrorEnvelope
	if err := json.Unmarshal(raw["error"], &env.Error); err != nil || env.Error == "" {
		return ErrorEnvelope{}, fmt.Errorf("answer has no string \"error\": %s", truncate(body))
	}
	if m, ok := raw["message"]; ok {
		if err := json.Unmarshal(m, &env.Message); err != nil {
			return ErrorEnvelope{}, fmt.Errorf("answer's \"message\" is not a string: %s", truncate(body))
		}
	}
	return env, nil
}

// LastEventPayload returns the DAG-CBOR body of the newest firehose event
// of a type ("commit", "sync", "identity", "account"), read from the data
// directory's database through a second connection.
func (s *Server) LastEventPayload(tb testing.TB, typ string) []byte {
	tb.Helper()
	path := filepath.Join(s.cfg.DataDir, config.DatabaseFile)
	if _, err := os.Stat(path); err != nil {
		tb.Fatalf("pdstest: %v", err)
	}
	db, err := sqlite.Open(context.Background(), path)
	if err != nil {
		tb.Fatalf("pdstest: open database: %v", err)
	}
	defer db.Close()
	p, err := db.LastEventPayload(context.Background(), typ)
	if err != nil {
		tb.Fatalf("pdstest: %v", err)
	}
	return p
}

// Event is one stored firehose event.
type Event struct {
	Seq     int64
	Type    string // "commit", "sync", "identity", "account"
	Payload []byte // DAG-CBOR body
}

// Events returns the stored firehose events with a seq above after, oldest
// first, read from the data directory's database through a second,
// read-only connection.
func (s *Server) Events(tb testing.TB, after int64) []Event {
	tb.Helper()
	path := filepath.Join(s.cfg.DataDir, config.DatabaseFile)
	db, err := sql.Open("sqlite", "file:"+filepath.ToSlash(path)+"?_pragma=busy_timeout(10000)&_pragma=query_only(1)")
	if err != nil {
		tb.Fatalf("pdstest: open database: %v", err)
	}
	defer db.Close()
	rows, err := db.Query("SELECT seq, type, payload FROM firehose_events WHERE seq > ? ORDER BY seq", after)
	if err != nil {
		tb.Fatalf("pdstest: read events: %v", err)
	}
	defer rows.Close()
	var out []Event
	for rows.Next() {
		var ev Event
		if err := rows.Scan(&ev.Seq, &ev.Type, &ev.Payload); err != nil {
			tb.Fatalf("pdstest: read event: %v", err)
		}
		out = append(out, ev)
	}
	if err := rows.Err(); err != nil {
		tb.Fatalf("pdstest: read events: %v", err)
	}
	return out
}

// LastSeq returns the seq of the newest stored firehose event (0 if none).
func (s *Server) LastSeq(tb testing.TB) int64 {
	tb.Helper()
	evs := s.Events(tb, 0)
	if len(evs) == 0 {
		return 0
	}
	return evs[len(evs)-1].Seq
}

// Session helpers.

// Session is the answer of createSession and refreshSession.
type Session struct {
	AccessJWT      string          `json:"accessJwt"`
	RefreshJWT     string          `json:"refreshJwt"`
	Handle         string          `json:"handle"`
	DID            string          `json:"did"`
	DIDDoc         json.RawMessage `json:"didDoc"`
	Email          string          `json:"email"`
	EmailConfirmed bool            `json:"emailConfirmed"`
	Active         bool            `json:"active"`
	Status         string          `json:"status"`
}

// Login calls com.atproto.server.createSession with an identifier (handle
// or DID) and a password (the account password, Password unless changed,
// or an app password) and fails the test unless it succeeds.
func (s *Server) Login(tb testing.TB, identifier, password string) Session {
	tb.Helper()
	var out Session
	s.Call(tb, http.MethodPost, "com.atproto.server.createSession", nil,
		map[string]string{"identifier": identifier, "password": password}, "", &out)
	if out.AccessJWT == "" || out.RefreshJWT == "" {
		tb.Fatalf("createSession answered without tokens")
	}
	return out
}

// Record helpers.

// WriteResult is the answer of createRecord and putRecord.
type WriteResult struct {
	URI              string      `json:"uri"`
	CID              string      `json:"cid"`
	Commit           *CommitMeta `json:"commit"`
	ValidationStatus string      `json:"validationStatus"`
}

// CommitMeta names a commit in write answers.
type CommitMeta struct {
	CID string `json:"cid"`
	Rev string `json:"rev"`
}

// RKey returns the record key of the written record's URI.
func (w WriteResult) RKey() string {
	u, err := syntax.ParseATURI(w.URI)
	if err != nil {
		return ""
	}
	return u.RecordKey().String()
}

// CreateRecord creates a record in the hosted account's repository with
// the admin token (rkey may be empty) and fails the test unless it
// succeeds.
func (s *Server) CreateRecord(tb testing.TB, collection, rkey string, record map[string]any) WriteResult {
	tb.Helper()
	in := map[string]any{"repo": s.DID(), "collection": collection, "record": record}
	if rkey != "" {
		in["rkey"] = rkey
	}
	var out WriteResult
	s.Call(tb, http.MethodPost, "com.atproto.repo.createRecord", nil, in, s.AdminToken(), &out)
	return out
}

// LatestCommit returns the repository head as com.atproto.sync.getLatestCommit
// reports it (with the admin token, so deactivated accounts work too).
func (s *Server) LatestCommit(tb testing.TB) CommitMeta {
	tb.Helper()
	var out CommitMeta
	s.Call(tb, http.MethodGet, "com.atproto.sync.getLatestCommit", url.Values{"did": {s.DID()}}, nil, s.AdminToken(), &out)
	return out
}

// Post returns a valid app.bsky.feed.post record with text.
func Post(text string) map[string]any {
	return map[string]any{"$type": "app.bsky.feed.post", "text": text, "createdAt": "2026-01-01T00:00:00.000Z"}
}

func truncate(b []byte) string {
	const max = 512
	s := strings.TrimSpace(string(b))
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}

// tbWriter forwards log lines to the test log. Lines arriving after the
// test finished are dropped, since testing panics on them.
type tbWriter struct {
	tb   testing.TB
	mu   sync.Mutex
	done bool
}

func (w *tbWriter) stop() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
}

func (w *tbWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.tb.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}
