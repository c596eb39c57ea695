package server

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/syntax"

	"stratus/internal/config"
	"stratus/internal/identity"
	"stratus/internal/idops"
	"stratus/internal/proxy"
	"stratus/internal/serviceauth"
)

// external are the services that talk to, or for, other services:
// forwarding, service tokens, identity operations.
type external struct {
	proxy       *proxy.Service
	signer      *serviceauth.Signer
	serviceAuth *serviceauth.Verifier
	identity    *idops.Service
}

// externalServices builds them from the configuration.
func (s *Server) externalServices(cfg *config.Config, opts Options, log *slog.Logger) (*external, error) {
	var rotation atcrypto.PrivateKey
	if cfg.RotationKey != "" {
		k, err := config.ParseKey(cfg.RotationKey)
		if err != nil {
			return nil, fmt.Errorf("rotation key: %w", err)
		}
		rotation = k
	}
	signer := &serviceauth.Signer{Keys: s.keys}
	ext := &external{
		signer:      signer,
		serviceAuth: serviceauth.NewVerifier(cfg.ServiceDID().String(), s.keys.public, nil),
		proxy: proxy.New(proxy.Config{
			AppViewDID:  cfg.AppViewDID,
			AppViewURL:  cfg.AppViewURL,
			ChatDID:     cfg.ChatDID,
			ChatURL:     cfg.ChatURL,
			PLCURL:      cfg.PLCURL,
			Timeout:     opts.ProxyTimeout,
			MaxResponse: opts.ProxyMaxResponse,
			Outbound:    opts.Outbound,
		}, signer, nil, log),
	}
	var resolver idops.HandleResolver = opts.HandleResolver
	var cached *idops.Resolver
	if resolver == nil {
		cached = idops.NewResolver(opts.Outbound)
		resolver = cached
	}
	ext.identity = idops.New(idops.Config{
		Accounts:    s.accounts,
		PublicURL:   cfg.PublicURL,
		UserDomains: cfg.UserDomains,
		// The PLC directory is the operator's choice, not a caller's, so
		// it is reached with an ordinary client.
		PLC:         &identity.PLCClient{URL: cfg.PLCURL, HTTPClient: &http.Client{Timeout: 15 * time.Second}},
		RotationKey: func() atcrypto.PrivateKey { return rotation },
		SigningKey:  s.keys.public,
		Resolver:    resolver,
		HandleChanged: func(_ context.Context, did syntax.DID, h syntax.Handle) error {
			if cached != nil {
				cached.Forget(h)
			}
			return s.recordHandle(did, h)
		},
	})
	return ext, nil
}

// recordHandle keeps settings.json in step with a handle changed through
// the API, so the files always describe the account as it is.
func (s *Server) recordHandle(did syntax.DID, h syntax.Handle) error {
	s.cfgMu.Lock()
	defer s.cfgMu.Unlock()
	if did != syntax.DID(s.cfg.DID) {
		return nil
	}
	if err := config.UpdateSettings(s.cfg.DataDir, func(st *config.Settings) { st.Handle = h.String() }); err != nil {
		return err
	}
	s.cfg.Handle = h.String()
	return nil
}
