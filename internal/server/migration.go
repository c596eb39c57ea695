package server

import (
	"context"
	"net/http"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"stratus/internal/config"
	"stratus/internal/identity"
	"stratus/internal/migration"
	"stratus/internal/safehttp"
)

// migrationService builds the inbound side of account migration:
// createAccount for the configured DID and importRepo.
func (s *Server) migrationService(cfg *config.Config, opts Options) *migration.Service {
	web := safehttp.NewClient(opts.Outbound)
	web.Timeout = 15 * time.Second
	res := &migration.Resolver{
		// The PLC directory is the operator's choice, as for identity
		// operations; did:web hosts come from the DID, so they go through
		// the SSRF guard.
		PLC: &identity.PLCClient{URL: cfg.PLCURL, HTTPClient: &http.Client{Timeout: 15 * time.Second}},
		Web: web,
	}
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
