// Package idops carries out identity operations for hosted accounts:
// resolving handles, changing an account's handle (in the DID document this
// server publishes for did:web, through a signed PLC operation for
// did:plc), and the PLC operation flow account migration uses
// (recommended credentials, a one-time token, signing and submitting).
// Every change is announced on the firehose with an #identity event.
//
// The reference implementation emails the PLC token. A single-user server
// has no mail, so the token is handed to the operator instead: the server
// holds it in memory for 15 minutes and the operator reads it with the
// admin token (`pds identity plc-token`). A stolen session alone therefore
// cannot move the account; it also takes the operator's credential. The
// token never appears in logs.
package idops

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/syntax"

	"stratus/internal/account"
	"stratus/internal/auth"
	"stratus/internal/identity"
	"stratus/internal/pdserr"
)

// TokenTTL is how long a PLC operation token is valid.
const TokenTTL = 15 * time.Minute

// Accounts is what identity operations need from the account service.
type Accounts interface {
	Get(ctx context.Context, did syntax.DID) (account.Account, error)
	ByHandle(ctx context.Context, h syntax.Handle) (account.Account, error)
	SetHandle(ctx context.Context, did syntax.DID, h syntax.Handle) error
	EmitIdentity(ctx context.Context, did syntax.DID) (int64, error)
}

// HandleResolver resolves handles through DNS and HTTPS.
type HandleResolver interface {
	ResolveHandle(ctx context.Context, h syntax.Handle) (syntax.DID, error)
}

// Config holds the dependencies of a Service.
type Config struct {
	Accounts Accounts
	// PublicURL is this server's origin, the atproto_pds endpoint.
	PublicURL string
	// UserDomains are the handle suffixes this server serves itself
	// (".example.com"): such handles need no outside verification.
	UserDomains []string
	// PLC talks to the PLC directory (did:plc accounts).
	PLC *identity.PLCClient
	// RotationKey returns the PLC rotation key this server holds, nil if
	// none.
	RotationKey func() atcrypto.PrivateKey
	// SigningKey returns the public signing key of a hosted account.
	SigningKey func(ctx context.Context, did syntax.DID) (atcrypto.PublicKey, error)
	// Resolver resolves handles not hosted here.
	Resolver HandleResolver
	// HandleChanged is told about a new handle after it is stored (the
	// server keeps its settings file in step); may be nil.
	HandleChanged func(ctx context.Context, did syntax.DID, h syntax.Handle) error
	Now           func() time.Time
}

// Service performs identity operations.
type Service struct {
	cfg Config

	mu     sync.Mutex
	tokens map[syntax.DID]pending
}

type pending struct {
	token string
	until time.Time
}

// New returns the identity operations service.
func New(cfg Config) *Service {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Service{cfg: cfg, tokens: map[syntax.DID]pending{}}
}

// ResolveHandle returns the DID of a handle: a hosted one from the
// database, any other through DNS and HTTPS.
func (s *Service) ResolveHandle(ctx context.Context, raw string) (syntax.DID, error) {
	h, err := syntax.ParseHandle(raw)
	if err != nil {
		return "", pdserr.New(pdserr.InvalidRequest, "Error: handle must be a valid handle")
	}
	h = h.Normalize()
	if a, err := s.cfg.Accounts.ByHandle(ctx, h); err == nil {
		return a.DID, nil
	} else if !pdserr.Is(err, pdserr.HandleNotFound) {
		return "", err
	}
	if s.servedHere(h) || s.cfg.Resolver == nil {
		return "", pdserr.New(pdserr.HandleNotFound, "Unable to resolve handle")
	}
	did, err := s.cfg.Resolver.ResolveHandle(ctx, h)
	if err != nil {
		return "", pdserr.Wrap(err, pdserr.HandleNotFound, "Unable to resolve handle")
	}
	return did, nil
}

// servedHere reports whether h is under one of the server's own handle
// domains.
func (s *Service) servedHere(h syntax.Handle) bool {
	for _, d := range s.cfg.UserDomains {
		d = strings.ToLower(strings.TrimPrefix(d, "."))
		if d != "" && (h.String() == d || strings.HasSuffix(h.String(), "."+d)) {
			return true
		}
	}
	return false
}

// UpdateHandle gives did the handle raw. A handle under one of the
// server's own domains is served here; any other must already resolve to
// did (DNS TXT _atproto or https://<handle>/.well-known/atproto-did). For
// did:plc the PLC document is updated first with an operation signed by
// the server's rotation key.
func (s *Service) UpdateHandle(ctx context.Context, did syntax.DID, raw string) error {
	h, err := syntax.ParseHandle(strings.TrimSpace(raw))
	if err != nil {
		return pdserr.New(pdserr.InvalidHandle, "Invalid handle: %s", raw)
	}
	h = h.Normalize()
	if !h.AllowedTLD() {
		return pdserr.New(pdserr.InvalidHandle, "Handle TLD is invalid or disallowed")
	}
	if other, err := s.cfg.Accounts.ByHandle(ctx, h); err == nil && other.DID != did {
		return pdserr.New(pdserr.HandleNotAvailable, "Handle already taken: %s", h)
	}
	if !s.servedHere(h) {
		if s.cfg.Resolver == nil {
			return pdserr.New(pdserr.InvalidRequest, "External handle did not resolve to DID")
		}
		got, err := s.cfg.Resolver.ResolveHandle(ctx, h)
		if err != nil || got != did {
			return pdserr.New(pdserr.InvalidRequest, "External handle did not resolve to DID")
		}
	}
	if did.Method() == "plc" {
		if err := s.plcUpdate(ctx, did, func(op *identity.Operation) {
			op.AlsoKnownAs = identity.WithHandle(op.AlsoKnownAs, h)
		}); err != nil {
			return err
		}
	}
	if err := s.cfg.Accounts.SetHandle(ctx, did, h); err != nil {
		return err
	}
	if s.cfg.HandleChanged != nil {
		if err := s.cfg.HandleChanged(ctx, did, h); err != nil {
			return fmt.Errorf("record new handle: %w", err)
		}
	}
	return nil
}

// plcUpdate signs and submits the operation that follows did's latest one
// with change applied.
func (s *Service) plcUpdate(ctx context.Context, did syntax.DID, change func(*identity.Operation)) error {
	key := s.rotationKey()
	if key == nil || s.cfg.PLC == nil {
		return pdserr.New(pdserr.InvalidRequest, "This server holds no PLC rotation key for %s", did)
	}
	last, err := s.cfg.PLC.LastOperation(ctx, did)
	if err != nil {
		return plcError(err)
	}
	op, err := identity.NewUpdate(last, key, change)
	if err != nil {
		return pdserr.Wrap(err, pdserr.InvalidRequest, "Could not build the PLC operation")
	}
	if err := s.cfg.PLC.Submit(ctx, did, op); err != nil {
		return plcError(err)
	}
	return nil
}

func (s *Service) rotationKey() atcrypto.PrivateKey {
	if s.cfg.RotationKey == nil {
		return nil
	}
	return s.cfg.RotationKey()
}

// plcError turns a directory failure into an XRPC error that says what
// the directory said, without internals.
func plcError(err error) error {
	var pe *identity.PLCError
	switch {
	case errors.Is(err, identity.ErrTombstoned):
		return pdserr.New(pdserr.InvalidRequest, "Did is tombstoned")
	case errors.As(err, &pe):
		return pdserr.Wrap(err, pdserr.InvalidRequest, "PLC directory refused the operation: "+pe.Message)
	}
	return pdserr.Wrap(err, pdserr.UpstreamFailure, "PLC directory unreachable")
}

// Credentials are the DID document values this server needs an account's
// identity to carry (getRecommendedDidCredentials).
type Credentials struct {
	RotationKeys        []string                      `json:"rotationKeys,omitempty"`
	AlsoKnownAs         []string                      `json:"alsoKnownAs,omitempty"`
	VerificationMethods map[string]string             `json:"verificationMethods"`
	Services            map[string]identity.OpService `json:"services"`
}

// RecommendedCredentials returns the credentials for did on this server.
func (s *Service) RecommendedCredentials(ctx context.Context, did syntax.DID) (*Credentials, error) {
	a, err := s.cfg.Accounts.Get(ctx, did)
	if err != nil {
		return nil, err
	}
	pub, err := s.cfg.SigningKey(ctx, did)
	if err != nil {
		return nil, err
	}
	c := &Credentials{
		VerificationMethods: map[string]string{identity.KeyIDAtproto: pub.DIDKey()},
		Services:            map[string]identity.OpService{identity.ServiceIDPDS: {Type: identity.ServiceTypePDS, Endpoint: s.cfg.PublicURL}},
	}
	if a.Handle != "" {
		c.AlsoKnownAs = []string{"at://" + a.Handle.String()}
	}
	if k := s.rotationKey(); k != nil {
		rpub, err := k.PublicKey()
		if err != nil {
			return nil, err
		}
		c.RotationKeys = []string{rpub.DIDKey()}
	}
	return c, nil
}

// RequestPLCToken starts the PLC signing flow for did: a fresh single-use
// token, valid for TokenTTL, replaces any earlier one. The operator reads
// it with PLCToken.
func (s *Service) RequestPLCToken(ctx context.Context, did syntax.DID) error {
	if _, err := s.cfg.Accounts.Get(ctx, did); err != nil {
		return err
	}
	tok := strings.ToUpper(auth.GenerateToken()[:10])
	tok = tok[:5] + "-" + tok[5:]
	s.mu.Lock()
	s.tokens[did] = pending{token: tok, until: s.cfg.Now().Add(TokenTTL)}
	s.mu.Unlock()
	return nil
}

// PLCToken returns the pending PLC token of did and when it expires, for
// the operator.
func (s *Service) PLCToken(did syntax.DID) (string, time.Time, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.tokens[did]
	if !ok || s.cfg.Now().After(p.until) {
		delete(s.tokens, did)
		return "", time.Time{}, pdserr.New(pdserr.InvalidRequest, "No PLC operation signature has been requested in the last %s; call com.atproto.identity.requestPlcOperationSignature first", TokenTTL)
	}
	return p.token, p.until, nil
}

// consumeToken checks and spends did's token.
func (s *Service) consumeToken(did syntax.DID, tok string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.tokens[did]
	switch {
	case !ok:
		return pdserr.New(pdserr.InvalidToken, "Token is invalid")
	case s.cfg.Now().After(p.until):
		delete(s.tokens, did)
		return pdserr.New(pdserr.ExpiredToken, "Token is expired")
	case subtle.ConstantTimeCompare([]byte(strings.ToUpper(strings.TrimSpace(tok))), []byte(p.token)) != 1:
		return pdserr.New(pdserr.InvalidToken, "Token is invalid")
	}
	delete(s.tokens, did)
	return nil
}

// SignInput are the fields signPlcOperation may change; nil keeps the
// current value.
type SignInput struct {
	Token               string                        `json:"token"`
	RotationKeys        []string                      `json:"rotationKeys,omitempty"`
	AlsoKnownAs         []string                      `json:"alsoKnownAs,omitempty"`
	VerificationMethods map[string]string             `json:"verificationMethods,omitempty"`
	Services            map[string]identity.OpService `json:"services,omitempty"`
}

// SignPLCOperation signs, with the server's rotation key, the operation
// that follows did's latest one with the given changes, after spending the
// token. It does not submit it: the new host does (account migration).
func (s *Service) SignPLCOperation(ctx context.Context, did syntax.DID, in SignInput) (*identity.Operation, error) {
	if did.Method() != "plc" {
		return nil, pdserr.New(pdserr.InvalidRequest, "%s is not a did:plc", did)
	}
	if strings.TrimSpace(in.Token) == "" {
		return nil, pdserr.New(pdserr.InvalidRequest, "email confirmation token required to sign PLC operations")
	}
	key := s.rotationKey()
	if key == nil || s.cfg.PLC == nil {
		return nil, pdserr.New(pdserr.InvalidRequest, "This server holds no PLC rotation key for %s", did)
	}
	if err := s.consumeToken(did, in.Token); err != nil {
		return nil, err
	}
	last, err := s.cfg.PLC.LastOperation(ctx, did)
	if err != nil {
		return nil, plcError(err)
	}
	op, err := identity.NewUpdate(last, key, func(op *identity.Operation) {
		if in.RotationKeys != nil {
			op.RotationKeys = in.RotationKeys
		}
		if in.AlsoKnownAs != nil {
			op.AlsoKnownAs = in.AlsoKnownAs
		}
		if in.VerificationMethods != nil {
			op.VerificationMethods = in.VerificationMethods
		}
		if in.Services != nil {
			op.Services = in.Services
		}
	})
	if err != nil {
		return nil, pdserr.Wrap(err, pdserr.InvalidRequest, "Invalid operation: "+strings.TrimPrefix(err.Error(), "build update op: "))
	}
	return op, nil
}

// SubmitPLCOperation sends a signed operation for did to the directory,
// after checking that it keeps the account working here: this server's
// rotation key, its endpoint, the account's signing key and handle. It
// then announces the change with an #identity event.
func (s *Service) SubmitPLCOperation(ctx context.Context, did syntax.DID, op *identity.Operation) error {
	if did.Method() != "plc" || s.cfg.PLC == nil {
		return pdserr.New(pdserr.InvalidRequest, "%s is not a did:plc", did)
	}
	if op == nil || op.Check() != nil || op.Sig == "" {
		return pdserr.New(pdserr.InvalidRequest, "Invalid operation")
	}
	if k := s.rotationKey(); k != nil {
		rpub, err := k.PublicKey()
		if err != nil {
			return err
		}
		found := false
		for _, r := range op.RotationKeys {
			found = found || r == rpub.DIDKey()
		}
		if !found {
			return pdserr.New(pdserr.InvalidRequest, "Rotation keys do not include server's rotation key")
		}
	}
	pds := op.Services[identity.ServiceIDPDS]
	if pds.Type != identity.ServiceTypePDS {
		return pdserr.New(pdserr.InvalidRequest, "Incorrect type on atproto_pds service")
	}
	if pds.Endpoint != s.cfg.PublicURL {
		return pdserr.New(pdserr.InvalidRequest, "Incorrect endpoint on atproto_pds service")
	}
	pub, err := s.cfg.SigningKey(ctx, did)
	if err != nil {
		return err
	}
	if op.VerificationMethods[identity.KeyIDAtproto] != pub.DIDKey() {
		return pdserr.New(pdserr.InvalidRequest, "Incorrect signing key")
	}
	a, err := s.cfg.Accounts.Get(ctx, did)
	if err != nil {
		return err
	}
	if a.Handle != "" && (len(op.AlsoKnownAs) == 0 || op.AlsoKnownAs[0] != "at://"+a.Handle.String()) {
		return pdserr.New(pdserr.InvalidRequest, "Incorrect handle in alsoKnownAs")
	}
	if err := s.cfg.PLC.Submit(ctx, did, op); err != nil {
		return plcError(err)
	}
	_, err = s.cfg.Accounts.EmitIdentity(ctx, did)
	return err
}
