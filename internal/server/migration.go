package server

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"stratus/internal/config"
	"stratus/internal/identity"
	"stratus/internal/migration"
	"stratus/internal/safehttp"
)

// migrationService builds the inbound side of account migration:
// createAccount for the configured DID and importRepo.
func (s *Server) migrationService(cfg *config.Config, res *migration.Resolver) *migration.Service {
	return migration.New(migration.Config{
		Repos:       s.repos,
		Accounts:    s.accounts,
		Sessions:    s.sessions,
		Hosted:      syntax.DID(cfg.DID),
		SigningKey:  s.keys.public,
		DocumentKey: res.SigningKey,
		SetPassword: func(ctx context.Context, pw string) error {
			_, err := operator{s}.SetPassword(ctx, pw)
			return err
		},
		ServiceDID:    cfg.ServiceDID().String(),
		MaxImportSize: cfg.ImportMaxSize,
		TempDir:       cfg.DataDir,
	})
}

// didResolver reads DID documents as they are now, uncached.
func didResolver(cfg *config.Config, opts Options) *migration.Resolver {
	web := safehttp.NewClient(opts.Outbound)
	web.Timeout = 15 * time.Second
	return &migration.Resolver{
		// The PLC directory is the operator's choice, as for identity
		// operations; did:web hosts come from the DID, so they go through
		// the SSRF guard.
		PLC: &identity.PLCClient{URL: cfg.PLCURL, HTTPClient: &http.Client{Timeout: 15 * time.Second}},
		Web: web,
	}
}

// validDID reports whether did's document names this server: its signing
// key and its public URL as the PDS endpoint (checkAccountStatus's
// validDid, which a migration waits for before activating). The document
// of the server's own did:web is the one it serves, built from both.
func (s *Server) validDID(cfg *config.Config, res *migration.Resolver) func(ctx context.Context, did syntax.DID) bool {
	return func(ctx context.Context, did syntax.DID) bool {
		if did == cfg.ServiceDID() || did == config.WebDID(cfg.PublicURL) {
			return true
		}
		key, endpoint, err := res.PDS(ctx, did)
		if err != nil {
			s.log.Info("checkAccountStatus: DID document not resolved", "did", did, "err", err)
			return false
		}
		ours, err := s.keys.public(ctx, did)
		if err != nil {
			return false
		}
		return key.Multibase() == ours.Multibase() && strings.TrimSuffix(endpoint, "/") == strings.TrimSuffix(cfg.PublicURL, "/")
	}
}
