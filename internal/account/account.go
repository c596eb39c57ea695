// Package account holds the accounts hosted by the server and their
// lifecycle: creation with a genesis commit, activation and deactivation,
// and the status checks that gate writes.
package account

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"stratus/internal/pdserr"
	"stratus/internal/repo"
	"stratus/internal/sequencer"
)

// Status is the hosting status of an account.
type Status string

// Account statuses, spelled as com.atproto.sync.getRepoStatus reports them.
const (
	Active      Status = "active"
	Deactivated Status = "deactivated"
	Takendown   Status = "takendown"
)

// ErrNotFound is returned by a Store for an unknown account.
var ErrNotFound = errors.New("account not found")

// Account is one hosted account.
type Account struct {
	DID       syntax.DID
	Handle    syntax.Handle
	Email     string
	Status    Status
	CreatedAt time.Time
}

// Active reports whether the account may write and is served as active.
func (a Account) Active() bool { return a.Status == Active }

// Store persists accounts. Implementations must be safe for concurrent use.
type Store interface {
	// Create inserts a new account.
	Create(ctx context.Context, a Account) error
	// Get returns the account with did, or ErrNotFound.
	Get(ctx context.Context, did syntax.DID) (Account, error)
	// ByHandle returns the account with handle (case-insensitive), or ErrNotFound.
	ByHandle(ctx context.Context, handle syntax.Handle) (Account, error)
	// List returns accounts ordered by DID, after cursor (exclusive).
	List(ctx context.Context, cursor string, limit int) ([]Account, error)
	// AppendEvents appends events for did in one transaction and returns
	// their sequence numbers.
	AppendEvents(ctx context.Context, did syntax.DID, events []sequencer.Event) ([]int64, error)
	// SetStatus changes the status of did and appends events, in one
	// transaction. It reports whether the status changed; events are only
	// appended when it did.
	SetStatus(ctx context.Context, did syntax.DID, from, to Status, events []sequencer.Event) (bool, error)
}

// Repos is what the account service needs from the repository engine.
type Repos interface {
	// SyncCAR returns a CAR holding only the current commit of did, and
	// its revision, for #sync events.
	SyncCAR(ctx context.Context, did syntax.DID) ([]byte, syntax.TID, error)
	// Create writes the genesis commit of a new repository together with
	// the events extra returns, in one transaction.
	Create(ctx context.Context, did syntax.DID, extra func(head repo.Head, commitCAR []byte) ([]sequencer.Event, error)) (repo.Head, error)
	// Head returns the current head of did's repository.
	Head(ctx context.Context, did syntax.DID) (repo.Head, error)
}

// Service manages accounts.
type Service struct {
	store Store
	repos Repos
	now   func() time.Time

	// recent remembers accounts read in the last moment, for the write
	// pre-check and handle lookups on the hot path. Decisions that matter
	// are re-checked in storage: a commit verifies the account is active
	// inside its own transaction.
	mu     sync.Mutex
	recent map[syntax.DID]cached
	handle map[string]cachedDID
}

type cached struct {
	a  Account
	at time.Time
}

type cachedDID struct {
	did syntax.DID
	at  time.Time
}

// cacheTTL bounds how stale a cached account may be.
const cacheTTL = time.Second

func (s *Service) cachedGet(ctx context.Context, did syntax.DID) (Account, error) {
	s.mu.Lock()
	c, ok := s.recent[did]
	s.mu.Unlock()
	if ok && time.Since(c.at) < cacheTTL {
		return c.a, nil
	}
	a, err := s.Get(ctx, did)
	if err != nil {
		return a, err
	}
	s.mu.Lock()
	s.recent[did] = cached{a: a, at: time.Now()}
	s.mu.Unlock()
	return a, nil
}

// forget drops cached state of did after a change made here.
func (s *Service) forget(did syntax.DID) {
	s.mu.Lock()
	delete(s.recent, did)
	for h, c := range s.handle {
		if c.did == did {
			delete(s.handle, h)
		}
	}
	s.mu.Unlock()
}

// NewService returns an account service.
func NewService(store Store, repos Repos, now func() time.Time) *Service {
	if now == nil {
		now = time.Now
	}
	return &Service{store: store, repos: repos, now: now, recent: map[syntax.DID]cached{}, handle: map[string]cachedDID{}}
}

// Get returns an account, with RepoNotFound for an unknown DID.
func (s *Service) Get(ctx context.Context, did syntax.DID) (Account, error) {
	a, err := s.store.Get(ctx, did)
	if errors.Is(err, ErrNotFound) {
		return Account{}, pdserr.Wrap(err, pdserr.RepoNotFound, "Could not find repo for DID: "+did.String())
	}
	return a, err
}

// Resolve returns the account named by a DID or a handle.
func (s *Service) Resolve(ctx context.Context, id string) (Account, error) {
	// Reads name the account on every request; the short-lived cache
	// saves a query each (changes made through this service are seen at
	// once, see forget).
	if did, err := syntax.ParseDID(id); err == nil {
		return s.cachedGet(ctx, did)
	}
	h, err := syntax.ParseHandle(id)
	if err != nil {
		return Account{}, pdserr.New(pdserr.InvalidRequest, "Invalid DID or handle: %s", id)
	}
	key := h.Normalize().String()
	s.mu.Lock()
	c, ok := s.handle[key]
	s.mu.Unlock()
	if ok && time.Since(c.at) < 10*cacheTTL {
		a, err := s.cachedGet(ctx, c.did)
		if err == nil && a.Handle.Normalize().String() == key {
			return a, nil
		}
	}
	a, err := s.store.ByHandle(ctx, h.Normalize())
	if errors.Is(err, ErrNotFound) {
		return Account{}, pdserr.Wrap(err, pdserr.RepoNotFound, "Could not find repo for handle: "+id)
	}
	if err != nil {
		return a, err
	}
	s.mu.Lock()
	s.handle[key] = cachedDID{did: a.DID, at: time.Now()}
	s.mu.Unlock()
	return a, nil
}

// ByHandle resolves a local handle.
func (s *Service) ByHandle(ctx context.Context, h syntax.Handle) (Account, error) {
	a, err := s.store.ByHandle(ctx, h.Normalize())
	if errors.Is(err, ErrNotFound) {
		return Account{}, pdserr.Wrap(err, pdserr.HandleNotFound, "Unable to resolve handle")
	}
	return a, err
}

// List returns a page of accounts.
func (s *Service) List(ctx context.Context, cursor string, limit int) ([]Account, error) {
	return s.store.List(ctx, cursor, limit)
}

// CanWrite refuses writes to accounts that are not active. It has the
// signature of repo.WriteGuard. It may answer from a cache up to a second
// old; the commit itself re-checks inside its transaction.
func (s *Service) CanWrite(ctx context.Context, did syntax.DID) error {
	a, err := s.cachedGet(ctx, did)
	if err != nil {
		return err
	}
	switch a.Status {
	case Active:
		return nil
	case Takendown:
		return pdserr.New(pdserr.RepoTakendown, "Account has been taken down")
	default:
		return pdserr.New(pdserr.AccountDeactivated, "Account is deactivated. Call activateAccount to enable writes.")
	}
}

// Activate makes a deactivated account active. It is idempotent and emits
// #account, #identity and #sync only on a real change, so that relays
// learn the account is back and where its repository stands.
func (s *Service) Activate(ctx context.Context, did syntax.DID) error {
	a, err := s.Get(ctx, did)
	if err != nil {
		return err
	}
	switch a.Status {
	case Active:
		return nil
	case Takendown:
		return pdserr.New(pdserr.RepoTakendown, "Account has been taken down")
	}
	now := s.now()
	accEv, err := sequencer.Account(did, true, "", now)
	if err != nil {
		return err
	}
	idEv, err := sequencer.Identity(did, a.Handle.String(), now)
	if err != nil {
		return err
	}
	car, rev, err := s.repos.SyncCAR(ctx, did)
	if err != nil {
		return fmt.Errorf("read commit for sync event: %w", err)
	}
	syncEv, err := sequencer.Sync(did, rev, car, now)
	if err != nil {
		return err
	}
	_, err = s.store.SetStatus(ctx, did, a.Status, Active, []sequencer.Event{accEv, idEv, syncEv})
	s.forget(did)
	if err != nil {
		return fmt.Errorf("activate: %w", err)
	}
	return nil
}

// Deactivate makes an active account deactivated: its repository stays
// readable but refuses writes. Idempotent; emits #account on a change.
func (s *Service) Deactivate(ctx context.Context, did syntax.DID) error {
	a, err := s.Get(ctx, did)
	if err != nil {
		return err
	}
	if a.Status != Active {
		return nil
	}
	ev, err := sequencer.Account(did, false, string(Deactivated), s.now())
	if err != nil {
		return err
	}
	_, err = s.store.SetStatus(ctx, did, Active, Deactivated, []sequencer.Event{ev})
	s.forget(did)
	if err != nil {
		return fmt.Errorf("deactivate: %w", err)
	}
	return nil
}

// Create registers a new account and writes its genesis commit with the
// #identity, #account and #sync events that announce it. Re-running it for
// an account whose genesis commit was interrupted completes the genesis.
func (s *Service) Create(ctx context.Context, a Account) error {
	if a.Status == "" {
		a.Status = Active
	}
	if a.CreatedAt.IsZero() {
		a.CreatedAt = s.now()
	}
	existing, err := s.store.Get(ctx, a.DID)
	switch {
	case errors.Is(err, ErrNotFound):
		if err := s.store.Create(ctx, a); err != nil {
			return err
		}
	case err != nil:
		return err
	default:
		a = existing
		if _, err := s.repos.Head(ctx, a.DID); err == nil {
			return pdserr.New(pdserr.InvalidRequest, "Account already exists: %s", a.DID)
		}
	}
	_, err = s.repos.Create(ctx, a.DID, func(head repo.Head, car []byte) ([]sequencer.Event, error) {
		now := s.now()
		id, err := sequencer.Identity(a.DID, a.Handle.String(), now)
		if err != nil {
			return nil, err
		}
		status := ""
		if a.Status != Active {
			status = string(a.Status)
		}
		acc, err := sequencer.Account(a.DID, a.Status == Active, status, now)
		if err != nil {
			return nil, err
		}
		sync, err := sequencer.Sync(a.DID, head.Rev, car, now)
		if err != nil {
			return nil, err
		}
		return []sequencer.Event{id, acc, sync}, nil
	})
	if err != nil {
		return fmt.Errorf("create repository: %w", err)
	}
	return nil
}

// Available checks that did's repository may be served to the public: it
// exists and is neither deactivated nor taken down.
func (s *Service) Available(ctx context.Context, did syntax.DID) (Account, error) {
	a, err := s.Get(ctx, did)
	if err != nil {
		return a, err
	}
	switch a.Status {
	case Active:
		return a, nil
	case Takendown:
		return a, pdserr.New(pdserr.RepoTakendown, "Repo has been takendown: %s", did)
	default:
		return a, pdserr.New(pdserr.RepoDeactivated, "Repo has been deactivated: %s", did)
	}
}

// EmitIdentity appends an #identity event for did (with its handle), so that
// consumers refresh their view of its identity. It returns the event's seq.
func (s *Service) EmitIdentity(ctx context.Context, did syntax.DID) (int64, error) {
	a, err := s.Get(ctx, did)
	if err != nil {
		return 0, err
	}
	ev, err := sequencer.Identity(did, a.Handle.String(), s.now())
	if err != nil {
		return 0, err
	}
	seqs, err := s.store.AppendEvents(ctx, did, []sequencer.Event{ev})
	if err != nil {
		return 0, fmt.Errorf("emit identity: %w", err)
	}
	return seqs[0], nil
}
