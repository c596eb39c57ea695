// Package server assembles a running PDS from a configuration: it opens
// storage, builds the domain services, and serves them over HTTP. The CLI
// and the integration tests both start the server through it.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/identity"
	"github.com/bluesky-social/indigo/atproto/syntax"

	"stratus/internal/account"
	"stratus/internal/auth"
	"stratus/internal/blob"
	"stratus/internal/config"
	"stratus/internal/crawl"
	"stratus/internal/idops"
	"stratus/internal/oauth"
	"stratus/internal/pdserr"
	"stratus/internal/prefs"
	"stratus/internal/ratelimit"
	"stratus/internal/repo"
	"stratus/internal/safehttp"
	"stratus/internal/schema"
	"stratus/internal/sequencer"
	"stratus/internal/sqlite"
	"stratus/internal/xrpc"
)

// Version is the server version reported by /xrpc/_health; the build sets
// it with -ldflags "-X stratus/internal/server.Version=...".
var Version = "0.1.0-dev"

// Server is an assembled PDS.
type Server struct {
	cfgMu    sync.RWMutex // guards the secrets in cfg, which may rotate
	cfg      *config.Config
	sessions *auth.Sessions
	verifier *auth.Verifier
	oauth    *oauth.Provider
	keys     *keys

	hub   *sequencer.Hub
	crawl *crawl.Requester

	bg             context.Context
	stopBackground context.CancelFunc
	background     sync.WaitGroup
	log            *slog.Logger
	db             *sqlite.DB
	repos          *repo.Service
	accounts       *account.Service
	blobs          *blob.Service
	handler        *xrpc.Server
	http           *xrpc.HTTPServer
	obs            *observer // counters and metrics (status.go)
}

// keys serves the configured signing key for the primary account. The key
// can be replaced at run time by the operator's key rotation.
type keys struct {
	did syntax.DID
	key atomic.Pointer[atcrypto.PrivateKeyK256]
}

func (k *keys) SigningKey(_ context.Context, did syntax.DID) (atcrypto.PrivateKey, error) {
	if did != k.did {
		return nil, fmt.Errorf("no signing key for %s", did)
	}
	return k.key.Load(), nil
}

func (k *keys) public(_ context.Context, did syntax.DID) (atcrypto.PublicKey, error) {
	if did != k.did {
		return nil, pdserr.New(pdserr.RepoNotFound, "Could not find repo for DID: %s", did)
	}
	return k.key.Load().PublicKey()
}

// Options change how a server reaches other services. They are not
// configuration: only tests set them (to point forwarding at loopback
// stand-ins), and the zero value is the strict production behaviour.
type Options struct {
	// Outbound relaxes the SSRF guard of requests to caller-chosen
	// services (forwarding, handle resolution).
	Outbound safehttp.Options
	// ProxyTimeout and ProxyMaxResponse bound forwarded exchanges; zero
	// means the defaults.
	ProxyTimeout     time.Duration
	ProxyMaxResponse int64
	// HandleResolver replaces DNS and HTTPS handle resolution.
	HandleResolver idops.HandleResolver
}

// Open validates cfg, opens the data directory and makes sure the
// configured account and its repository exist.
func Open(ctx context.Context, cfg *config.Config, log *slog.Logger) (*Server, error) {
	return OpenWith(ctx, cfg, log, Options{})
}

// OpenWith is Open with options.
func OpenWith(ctx context.Context, cfg *config.Config, log *slog.Logger, opts Options) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	signing, err := cfg.SigningKeyParsed()
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	did := syntax.DID(cfg.DID)
	handle := syntax.Handle(cfg.Handle).Normalize()
	catalog, err := schema.Load()
	if err != nil {
		return nil, fmt.Errorf("load lexicons: %w", err)
	}
	db, err := sqlite.OpenWith(ctx, filepath.Join(cfg.DataDir, config.DatabaseFile), sqlite.Options{RelaxedSync: !cfg.SyncCommits})
	if err != nil {
		return nil, err
	}
	k := &keys{did: did}
	k.key.Store(signing)
	s := &Server{cfg: cfg, log: log, db: db, keys: k}
	s.obs = s.newObserver()
	var accounts *account.Service
	s.repos = repo.NewService(repo.Config{
		Store:   countingStore{db.Repos(), s.obs},
		Schemas: catalog,
		Keys:    k,
		CanWrite: func(ctx context.Context, did syntax.DID) error {
			return accounts.CanWrite(ctx, did)
		},
	})
	accounts = account.NewService(db.Accounts(), s.repos, nil)
	s.accounts = accounts
	if s.blobs, err = openBlobs(cfg, db, log); err != nil {
		db.Close()
		return nil, err
	}

	if err := s.ensureAccount(ctx, did, handle); err != nil {
		db.Close()
		return nil, err
	}
	if err := s.verifyStorage(ctx, did); err != nil {
		db.Close()
		return nil, err
	}
	tokens := auth.NewTokens(cfg.JWTSecret, cfg.ServiceDID().String(), nil)
	s.sessions, err = auth.NewSessions(ctx, tokens, db.Sessions(), accounts, s, nil)
	if err != nil {
		db.Close()
		return nil, err
	}
	s.verifier = auth.NewVerifier(cfg.AdminToken, s.sessions)
	s.oauth, err = oauth.New(oauth.Config{Issuer: cfg.PublicURL, Store: db.OAuth(), Accounts: accounts, Passwords: s, Fetch: cfg.OAuthFetch, Logger: log})
	if err != nil {
		db.Close()
		return nil, err
	}
	s.verifier.SetOAuth(s.oauth)

	// Background work (firehose fan-out, pruning) lives until Close.
	bg, cancel := context.WithCancel(context.Background())
	s.stopBackground = cancel
	s.hub, err = sequencer.NewHub(bg, db.Events(), log, 0)
	if err != nil {
		cancel()
		db.Close()
		return nil, err
	}
	if _, s.obs.seqAtOpen, err = db.Events().SeqBounds(ctx); err != nil {
		cancel()
		db.Close()
		return nil, err
	}
	s.crawl = crawl.New(cfg.Hostname, cfg.Crawlers, nil, log)
	db.OnEvents(func(evs []sequencer.Stored) {
		s.hub.Offer(evs)
		s.crawl.Wrote()
	})
	s.bg = bg
	proxies, err := ratelimit.ParsePrefixes(cfg.TrustedProxies)
	if err != nil {
		cancel()
		db.Close()
		return nil, fmt.Errorf("trusted proxies: %w", err)
	}
	ext, err := s.externalServices(cfg, opts, log)
	if err != nil {
		cancel()
		db.Close()
		return nil, err
	}
	resolver := didResolver(cfg, opts)
	s.handler = xrpc.New(xrpc.Deps{
		Proxy:        ext.proxy,
		Signer:       ext.signer,
		ServiceAuth:  ext.serviceAuth,
		Prefs:        prefs.NewService(db.Prefs(), nil),
		RecordsSince: db,
		Identity:     ext.identity,

		Hub:             s.hub,
		TrustedProxies:  proxies,
		RateLimitBypass: cfg.RateLimitBypass,
		Repos:           s.repos,
		Accounts:        accounts,
		Blobs:           s.blobs,
		BlobCounts:      db.Blobs().Counts,
		Auth:            s.verifier,
		Sessions:        s.sessions,
		Operator:        operator{s},
		PublicURL:       cfg.PublicURL,
		Hostname:        cfg.Hostname,
		SigningKey:      k.public,
		HandleCheck:     newHandleChecker().check,
		PrimaryDID:      did,
		Version:         Version,
		Links: xrpc.Links{
			PrivacyPolicy:  cfg.PrivacyPolicyURL,
			TermsOfService: cfg.TermsOfServiceURL,
			ContactEmail:   cfg.ContactEmail,
		},
		UserDomains: cfg.UserDomains,
		Logger:      log,
		Ping:        db.Ping,
		OAuth:       s.oauth,
		Migration:   s.migrationService(cfg, resolver),
		ValidDID:    s.validDID(cfg, resolver),
		Status:      s.Status,
	})
	return s, nil
}

// ensureAccount creates the configured account with its genesis commit on
// first start, and keeps its handle and email in step with the settings.
func (s *Server) ensureAccount(ctx context.Context, did syntax.DID, handle syntax.Handle) error {
	_, err := s.accounts.Get(ctx, did)
	if err != nil && !pdserr.Is(err, pdserr.RepoNotFound) {
		return err
	}
	if err == nil {
		if _, herr := s.repos.Head(ctx, did); herr == nil {
			return nil
		}
	}
	status := account.Active
	if !s.cfg.InitiallyActive {
		status = account.Deactivated
	}
	if err := s.accounts.Create(ctx, account.Account{DID: did, Handle: handle, Email: s.cfg.Email, Status: status}); err != nil {
		return fmt.Errorf("create account %s: %w", did, err)
	}
	s.log.InfoContext(ctx, "created account", "did", did, "handle", handle)
	return nil
}

// Start listens on the configured bind address and port (port 0 picks a
// free one) and serves in the background.
func (s *Server) Start() error {
	addr := net.JoinHostPort(s.cfg.Bind, strconv.Itoa(s.cfg.Port))
	if err := s.startMetrics(); err != nil {
		return err
	}
	h, err := xrpc.Listen(addr, s.instrument(s.handler), s.log)
	if err != nil {
		s.stopMetrics(context.Background())
		return err
	}
	now := time.Now().UTC()
	s.obs.started.Store(&now)
	s.http = h
	go func() {
		if err := h.Serve(); err != nil {
			s.log.Error("http server stopped", "err", err)
		}
	}()
	s.background.Add(1)
	go func() {
		defer s.background.Done()
		s.housekeeping(s.bg)
	}()
	s.crawl.Started(s.bg)
	return nil
}

// housekeeping prunes expired session records and firehose events older
// than the retention every ten minutes until ctx ends.
func (s *Server) housekeeping(ctx context.Context) {
	t := time.NewTicker(10 * time.Minute)
	defer t.Stop()
	for {
		if err := s.sessions.Prune(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("prune sessions", "err", err)
		}
		if err := s.oauth.Prune(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("prune oauth grants", "err", err)
		}
		if n, err := s.db.Events().PruneBefore(ctx, time.Now().Add(-s.cfg.Retention())); err != nil && ctx.Err() == nil {
			s.log.Warn("prune firehose", "err", err)
		} else if n > 0 {
			s.log.Info("pruned firehose events", "count", n)
		}
		s.collectBlobs(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Port returns the port the server listens on.
func (s *Server) Port() int { return s.http.Port() }

// Repos returns the repository engine.
func (s *Server) Repos() *repo.Service { return s.repos }

// Accounts returns the account service.
func (s *Server) Accounts() *account.Service { return s.accounts }

// Hub returns the firehose hub.
func (s *Server) Hub() *sequencer.Hub { return s.hub }

// Close stops serving (waiting up to ten seconds for requests in flight)
// and closes storage.
func (s *Server) Close() error {
	var err error
	if s.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err = s.http.Shutdown(ctx)
		s.stopMetrics(ctx)
	}
	// Stop background work (which also ends firehose subscriptions, whose
	// hijacked connections Shutdown does not wait for) before closing the
	// database under it.
	if s.stopBackground != nil {
		s.stopBackground()
		s.background.Wait()
		if s.hub != nil {
			<-s.hub.Done()
		}
	}
	if e := s.db.Close(); e != nil && err == nil {
		err = e
	}
	return err
}

// handleChecker verifies that a handle resolves back to its DID through
// DNS or HTTPS (with indigo's resolver), caching answers for a while so
// describeRepo stays fast.
type handleChecker struct {
	dir *identity.BaseDirectory
	mu  sync.Mutex
	at  map[syntax.Handle]checked
}

type checked struct {
	ok bool
	at time.Time
}

func newHandleChecker() *handleChecker {
	return &handleChecker{dir: &identity.BaseDirectory{}, at: map[syntax.Handle]checked{}}
}

func (c *handleChecker) check(ctx context.Context, h syntax.Handle, did syntax.DID) bool {
	c.mu.Lock()
	if v, ok := c.at[h]; ok && time.Since(v.at) < 5*time.Minute {
		c.mu.Unlock()
		return v.ok
	}
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	got, err := c.dir.ResolveHandle(ctx, h)
	ok := err == nil && got == did
	if err != nil && errors.Is(err, context.Canceled) {
		return false
	}
	c.mu.Lock()
	c.at[h] = checked{ok: ok, at: time.Now()}
	c.mu.Unlock()
	return ok
}
