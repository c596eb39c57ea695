package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"stratus/internal/config"
	"stratus/internal/identity"
	"stratus/internal/metrics"
	"stratus/internal/repo"
	"stratus/internal/sqlite"
	"stratus/internal/status"
)

// recentEvents is how many firehose events the status report lists.
const recentEvents = 10

// observer holds what the server counts about itself for the status
// report and the Prometheus metrics.
type observer struct {
	started   atomic.Pointer[time.Time]
	commits   atomic.Int64
	requests  atomic.Int64
	seqAtOpen int64

	metrics   *metrics.Metrics // nil when metrics-addr is empty
	metricsLn net.Listener
	metricsHS *http.Server

	plc plcCheck
}

// countingStore is the repository store that counts successful commits.
type countingStore struct {
	*sqlite.RepoStore
	obs *observer
}

// Apply implements repo.Store.
func (c countingStore) Apply(ctx context.Context, b *repo.Batch) ([]int64, error) {
	seqs, err := c.RepoStore.Apply(ctx, b)
	if err == nil {
		c.obs.commits.Add(1)
		if c.obs.metrics != nil {
			c.obs.metrics.Commit()
		}
	}
	return seqs, err
}

// ApplyGroup implements repo.Store: the commit path writes through it,
// several commits to a transaction.
func (c countingStore) ApplyGroup(ctx context.Context, bs []*repo.Batch) ([][]int64, []error, error) {
	seqs, errs, err := c.RepoStore.ApplyGroup(ctx, bs)
	if err == nil {
		for _, e := range errs {
			if e == nil {
				c.obs.commits.Add(1)
				if c.obs.metrics != nil {
					c.obs.metrics.Commit()
				}
			}
		}
	}
	return seqs, errs, err
}

// newObserver creates the counters and, when metrics-addr is set, the
// server's metrics registry.
func (s *Server) newObserver() *observer {
	obs := &observer{}
	if s.cfg.MetricsAddr != "" {
		obs.metrics = metrics.New(metrics.Config{
			Served:   func(nsid string) bool { return s.handler != nil && s.handler.Serves(nsid) },
			Snapshot: s.metricsSnapshot,
			Log:      s.log,
		})
	}
	return obs
}

// metricsSnapshot reads the state the metrics report at each scrape.
func (s *Server) metricsSnapshot(ctx context.Context) (metrics.Snapshot, error) {
	var m metrics.Snapshot
	_, latest, err := s.db.Events().SeqBounds(ctx)
	if err != nil {
		return m, err
	}
	bs, err := s.blobs.Stats(ctx)
	if err != nil {
		return m, err
	}
	dbBytes, wal, err := s.db.Sizes()
	if err != nil {
		return m, err
	}
	m.LatestSeq, m.Events = latest, max(0, latest-s.obs.seqAtOpen)
	m.Subscribers = s.hub.Subscribers()
	m.Blobs, m.BlobBytes = bs.Blobs, bs.Bytes
	m.DBBytes, m.WALBytes = dbBytes, wal
	return m, nil
}

// instrument wraps the public handler: every request is counted, and
// measured when metrics are on.
func (s *Server) instrument(h http.Handler) http.Handler {
	if s.obs.metrics != nil {
		h = s.obs.metrics.Middleware(h)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.obs.requests.Add(1)
		h.ServeHTTP(w, r)
	})
}

// startMetrics serves /metrics on its own listener (never the public one).
func (s *Server) startMetrics() error {
	if s.obs.metrics == nil {
		return nil
	}
	ln, err := net.Listen("tcp", s.cfg.MetricsAddr)
	if err != nil {
		return fmt.Errorf("metrics listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", s.obs.metrics.Handler())
	s.obs.metricsLn = ln
	s.obs.metricsHS = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := s.obs.metricsHS.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("metrics server stopped", "err", err)
		}
	}()
	s.log.Info("metrics on http://" + ln.Addr().String() + "/metrics")
	return nil
}

// stopMetrics closes the metrics listener.
func (s *Server) stopMetrics(ctx context.Context) {
	if s.obs != nil && s.obs.metricsHS != nil {
		s.obs.metricsHS.Shutdown(ctx)
	}
}

// MetricsAddr returns the address /metrics is served on ("" when off or
// not started).
func (s *Server) MetricsAddr() string {
	if s.obs == nil || s.obs.metricsLn == nil {
		return ""
	}
	return s.obs.metricsLn.Addr().String()
}

// Status assembles the operator's status report. Failures to read a part
// become problems in the report rather than an error, so the operator
// sees everything that could be read.
func (s *Server) Status(ctx context.Context) (*status.Report, error) {
	now := time.Now()
	s.cfgMu.RLock()
	cfg := *s.cfg
	s.cfgMu.RUnlock()
	did := syntax.DID(cfg.DID)
	r := &status.Report{
		Version:      Version,
		Time:         now.UTC(),
		PublicURL:    cfg.PublicURL,
		Hostname:     cfg.Hostname,
		MetricsAddr:  s.MetricsAddr(),
		Crawlers:     []status.Crawler{},
		RecentEvents: []status.Event{},
		Problems:     []string{},
		Warnings:     []string{},
	}
	problem := func(format string, args ...any) { r.Problems = append(r.Problems, fmt.Sprintf(format, args...)) }
	warn := func(format string, args ...any) { r.Warnings = append(r.Warnings, fmt.Sprintf(format, args...)) }
	if t := s.obs.started.Load(); t != nil {
		r.StartedAt = t
		r.UptimeSeconds = int64(now.Sub(*t).Seconds())
	}
	r.Activity = status.Activity{Commits: s.obs.commits.Load(), Requests: s.obs.requests.Load()}

	if err := s.db.Ping(ctx); err != nil {
		problem("storage: the database does not answer: %v", err)
	}
	// Account and repository.
	r.Account.DID = did.String()
	if a, err := s.accounts.Get(ctx, did); err != nil {
		problem("account: %v", err)
	} else {
		r.Account.Handle = a.Handle.String()
		r.Account.Status = string(a.Status)
		if !a.Active() {
			warn("the account is %s: writes are refused and relays are not served its repository (pds activate)", a.Status)
		}
	}
	if h, err := s.db.Repos().Head(ctx, did); err != nil {
		problem("repository: no current commit: %v", err)
	} else {
		r.Account.Rev, r.Account.Head = h.Rev.String(), h.Commit.String()
		if t, err := syntax.ParseTID(h.Rev.String()); err == nil {
			at := t.Time().UTC()
			r.Account.LastCommitAt = &at
		}
	}
	if colls, err := s.db.CollectionCounts(ctx, did); err != nil {
		problem("repository: %v", err)
	} else {
		r.Account.Collections = colls
		for _, c := range colls {
			r.Account.Records += c.Records
		}
	}

	// Storage.
	r.Storage.BlobStore = cfg.BlobStore
	if r.Storage.BlobStore == "" {
		r.Storage.BlobStore = "disk"
	}
	if dbBytes, wal, err := s.db.Sizes(); err != nil {
		problem("storage: %v", err)
	} else {
		r.Storage.DatabaseBytes, r.Storage.WALBytes = dbBytes, wal
	}
	if bs, err := s.blobs.Stats(ctx); err != nil {
		problem("blobs: %v", err)
	} else {
		r.Storage.Blobs, r.Storage.BlobBytes = bs.Blobs, bs.Bytes
		r.Storage.UnreferencedBlobs, r.Storage.MissingBlobs = bs.Unreferenced, bs.Missing
		if bs.Missing > 0 {
			warn("blobs: %d referenced blobs are not held (com.atproto.repo.listMissingBlobs lists them)", bs.Missing)
		}
	}

	// Firehose.
	r.Firehose.RetentionSeconds = int64(cfg.Retention().Seconds())
	r.Firehose.Subscribers = s.hub.Subscribers()
	if oldest, latest, err := s.db.Events().SeqBounds(ctx); err != nil {
		problem("firehose: %v", err)
	} else {
		r.Firehose.OldestSeq, r.Firehose.LatestSeq = oldest, latest
	}
	if evs, err := s.db.RecentEvents(ctx, recentEvents); err != nil {
		problem("firehose: %v", err)
	} else {
		r.RecentEvents = evs
	}

	// Credentials.
	if c, err := s.db.CredentialCounts(ctx, did, now); err != nil {
		problem("sessions: %v", err)
	} else {
		r.Sessions = c
	}

	// Crawlers.
	for _, a := range s.crawl.Status() {
		c := status.Crawler{URL: a.Relay}
		if !a.At.IsZero() {
			at := a.At.UTC()
			c.LastAskedAt = &at
		}
		if a.Err != nil {
			c.LastError = a.Err.Error()
			warn("crawler %s refused the last crawl request: %v", a.Relay, a.Err)
		}
		r.Crawlers = append(r.Crawlers, c)
	}

	s.identityStatus(ctx, &cfg, r, problem, warn)
	return r, nil
}

// identityStatus checks that the DID document the world resolves names
// the key that signs the repository. A did:web document is served by this
// server from the key itself; a did:plc document is fetched from the PLC
// directory (at most every few minutes, with a short timeout).
func (s *Server) identityStatus(ctx context.Context, cfg *config.Config, r *status.Report, problem, warn func(string, ...any)) {
	did := syntax.DID(cfg.DID)
	r.Identity.Method = did.Method()
	pub, err := s.keys.key.Load().PublicKey()
	if err != nil {
		problem("identity: signing key: %v", err)
		return
	}
	r.Identity.SigningKey = pub.DIDKey()
	if cfg.SigningKeyPublic != "" && cfg.SigningKeyPublic != pub.DIDKey() {
		problem("identity: settings name signing key %s but the server signs with %s", cfg.SigningKeyPublic, pub.DIDKey())
	}
	match := func(docKey string) {
		r.Identity.DocumentKey = docKey
		ok := docKey == pub.DIDKey()
		r.Identity.KeyMatches = &ok
		if !ok {
			problem("identity: the DID document names signing key %s but the repository is signed with %s: relays will reject new commits", docKey, pub.DIDKey())
		}
	}
	switch did.Method() {
	case "web":
		r.Identity.Source = cfg.PublicURL + "/.well-known/did.json (served here)"
		match(pub.DIDKey())
		if want := config.WebDID(cfg.PublicURL); want != did {
			warn("identity: %s is resolved at https://%s/.well-known/did.json, not at this server's public URL: that document must name key %s and service %s",
				did, strings.ReplaceAll(did.Identifier(), "%3A", ":"), pub.DIDKey(), cfg.PublicURL)
		}
	case "plc":
		r.Identity.Source = cfg.PLCURL
		doc, err := s.obs.plc.document(ctx, cfg.PLCURL, did)
		if err != nil {
			warn("identity: could not read the DID document from %s: %v", cfg.PLCURL, err)
			return
		}
		key, endpoint := "", ""
		for _, vm := range doc.VerificationMethod {
			if strings.HasSuffix(vm.ID, "#"+identity.KeyIDAtproto) {
				key = "did:key:" + vm.PublicKeyMultibase
			}
		}
		for _, sv := range doc.Service {
			if strings.HasSuffix(sv.ID, "#"+identity.ServiceIDPDS) {
				endpoint = sv.ServiceEndpoint
			}
		}
		match(key)
		if endpoint != cfg.PublicURL {
			problem("identity: the DID document points the account at %q, not at this server (%s)", endpoint, cfg.PublicURL)
		}
	}
}

// plcCheck caches the account's did:plc document, so that a dashboard
// refreshing every second asks the directory at most every few minutes.
type plcCheck struct {
	mu  sync.Mutex
	at  time.Time
	doc *identity.Document
	err error
}

// plcCacheOK and plcCacheErr are how long an answer and a failure are
// kept.
const (
	plcCacheOK  = 5 * time.Minute
	plcCacheErr = time.Minute
)

func (c *plcCheck) document(ctx context.Context, plcURL string, did syntax.DID) (*identity.Document, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ttl := plcCacheOK
	if c.err != nil {
		ttl = plcCacheErr
	}
	if !c.at.IsZero() && time.Since(c.at) < ttl {
		return c.doc, c.err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	client := &identity.PLCClient{URL: plcURL, HTTPClient: &http.Client{Timeout: 5 * time.Second}}
	c.doc, c.err = client.Document(ctx, did)
	c.at = time.Now()
	return c.doc, c.err
}
