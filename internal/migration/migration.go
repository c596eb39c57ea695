// Package migration moves an account onto this server from another PDS:
// createAccount for an existing DID, authorised by a service token the
// account's current host signed, and com.atproto.repo.importRepo. Moving
// away needs nothing here beyond the ordinary endpoints.
//
// This server hosts one account, configured by its operator. A migration
// target is a data directory prepared for an existing DID (`pds init
// --migrate`): the account starts deactivated with an empty repository,
// and createAccount does not create anything — it lets the holder of the
// DID claim that prepared account (set its password, get a session) while
// the DID document still names the previous host's key. Once the identity
// points here, or the account is active, createAccount is refused, so
// nobody on the internet can create or take over an account.
package migration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/syntax"

	"stratus/internal/account"
	"stratus/internal/auth"
	"stratus/internal/pdserr"
	"stratus/internal/repo"
	"stratus/internal/sequencer"
	"stratus/internal/serviceauth"
)

// CreateAccountNSID is the method a migration's service token is bound to.
const CreateAccountNSID = syntax.NSID("com.atproto.server.createAccount")

// DefaultMaxImportSize is the default limit of importRepo bodies.
const DefaultMaxImportSize = 1 << 30

// Config holds the dependencies of a Service.
type Config struct {
	Repos    *repo.Service
	Accounts *account.Service
	Sessions *auth.Sessions
	// Hosted is the account this server hosts.
	Hosted syntax.DID
	// SigningKey returns this server's public signing key for the account.
	SigningKey func(ctx context.Context, did syntax.DID) (atcrypto.PublicKey, error)
	// DocumentKey returns the atproto signing key the DID document names
	// now, resolved through the configured PLC directory or did:web.
	DocumentKey func(ctx context.Context, did syntax.DID) (atcrypto.PublicKey, error)
	// SetPassword replaces the account password (the operator's rotation).
	SetPassword func(ctx context.Context, password string) error
	// ServiceDID is this server's DID, the audience of service tokens.
	ServiceDID string
	// MaxImportSize bounds importRepo bodies; 0 means DefaultMaxImportSize.
	MaxImportSize int64
	// TempDir holds imports while they are checked.
	TempDir string
	Now     func() time.Time
}

// Service performs the inbound side of account migration.
type Service struct {
	cfg    Config
	tokens *serviceauth.Verifier
}

// New returns a migration service.
func New(cfg Config) *Service {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxImportSize <= 0 {
		cfg.MaxImportSize = DefaultMaxImportSize
	}
	s := &Service{cfg: cfg}
	// Service tokens for createAccount are checked against the DID
	// document, and only for the hosted DID: no caller can make this
	// server resolve an identity of their choosing.
	s.tokens = serviceauth.NewVerifier(cfg.ServiceDID, func(ctx context.Context, did syntax.DID) (atcrypto.PublicKey, error) {
		if did != cfg.Hosted {
			return nil, fmt.Errorf("%s is not the account this server is set up for", did)
		}
		return cfg.DocumentKey(ctx, did)
	}, cfg.Now)
	return s
}

// CreateInput is the body of com.atproto.server.createAccount.
type CreateInput struct {
	DID        string `json:"did"`
	Handle     string `json:"handle"`
	Email      string `json:"email"`
	Password   string `json:"password"`
	InviteCode string `json:"inviteCode"`
}

// CreateAccount serves createAccount for a migration: in.DID must be the
// account this server was prepared for, token a service JWT for
// createAccount signed by the key in the DID's current document and
// addressed to this server, and the account still deactivated with its
// identity not yet pointing here. It sets the password (when given) and
// starts a session. Anything else is refused: this server never creates
// accounts for strangers.
func (s *Service) CreateAccount(ctx context.Context, in CreateInput, token string) (*auth.Session, error) {
	if in.DID == "" {
		return nil, pdserr.New(pdserr.InvalidRequest,
			"This server hosts a single account set up by its operator; createAccount only accepts that account moving here from another server (did and a service token from its current host)")
	}
	did, err := syntax.ParseDID(in.DID)
	if err != nil {
		return nil, pdserr.New(pdserr.InvalidRequest, "Invalid DID: %s", in.DID)
	}
	if token == "" {
		return nil, pdserr.New(pdserr.AuthRequired, "Missing auth to create account with did: %s", did)
	}
	if did != s.cfg.Hosted {
		return nil, pdserr.New(pdserr.InvalidRequest, "This server is not set up to receive %s", did)
	}
	iss, err := s.tokens.Verify(ctx, token, CreateAccountNSID)
	if err != nil {
		return nil, err
	}
	if iss != did {
		return nil, pdserr.New(pdserr.AuthRequired, "Missing auth to create account with did: %s", did)
	}
	a, err := s.cfg.Accounts.Get(ctx, did)
	if err != nil {
		return nil, err
	}
	if a.Status != account.Deactivated {
		return nil, pdserr.New(pdserr.InvalidRequest, "Account already exists: %s", did)
	}
	docKey, err := s.cfg.DocumentKey(ctx, did)
	if err != nil {
		return nil, pdserr.Wrap(err, pdserr.InvalidRequest, "Could not resolve the DID document of "+did.String())
	}
	own, err := s.cfg.SigningKey(ctx, did)
	if err != nil {
		return nil, err
	}
	if docKey.DIDKey() == own.DIDKey() {
		// The identity already names this server's key, so the token was
		// minted here, not by the previous host.
		return nil, pdserr.New(pdserr.InvalidRequest, "Account already exists: %s (its identity already points here)", did)
	}
	if in.Handle != "" {
		h, err := syntax.ParseHandle(in.Handle)
		if err != nil {
			return nil, pdserr.New(pdserr.InvalidHandle, "Invalid handle: %s", in.Handle)
		}
		if !strings.EqualFold(h.String(), a.Handle.String()) {
			return nil, pdserr.New(pdserr.HandleNotAvailable,
				"This server is set up for the handle %s; change it after the move with updateHandle", a.Handle)
		}
	}
	if in.Password != "" {
		if err := s.cfg.SetPassword(ctx, in.Password); err != nil {
			return nil, err
		}
	}
	return s.cfg.Sessions.Start(ctx, a)
}

// Import replaces the account's repository with the CAR in body; see
// repo.Service.Import. The commit may be signed by the key the DID
// document names (the previous host's) or by this server's own. The
// import is announced with a #sync event, which relays act on once the
// account is active and its identity points here.
func (s *Service) Import(ctx context.Context, did syntax.DID, body io.Reader) (*repo.ImportResult, error) {
	own, err := s.cfg.SigningKey(ctx, did)
	if err != nil {
		return nil, err
	}
	keys := []atcrypto.PublicKey{own}
	docKey, docErr := s.cfg.DocumentKey(ctx, did)
	if docErr == nil {
		keys = append(keys, docKey)
	}
	res, err := s.cfg.Repos.ImportStream(ctx, did, body, repo.ImportOptions{
		Keys:    keys,
		MaxSize: s.cfg.MaxImportSize,
		TempDir: s.cfg.TempDir,
		Events: func(head repo.Head, car []byte) ([]sequencer.Event, error) {
			ev, err := sequencer.Sync(did, head.Rev, car, s.cfg.Now())
			if err != nil {
				return nil, err
			}
			return []sequencer.Event{ev}, nil
		},
	})
	if err != nil && docErr != nil && pdserr.Is(err, pdserr.InvalidRepo) && strings.Contains(err.Error(), "signature") {
		return nil, pdserr.Wrap(errors.Join(err, docErr), pdserr.InvalidRepo,
			"The commit's signature does not verify against this server's key, and the DID document could not be resolved to check the account's key")
	}
	return res, err
}
