package repo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	atrepo "github.com/bluesky-social/indigo/atproto/repo"
	"github.com/bluesky-social/indigo/atproto/repo/mst"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"

	"stratus/internal/pdserr"
	"stratus/internal/sequencer"
)

// Schemas validates records against lexicons. internal/schema implements it.
type Schemas interface {
	HasRecord(collection syntax.NSID) bool
	CheckRecordKey(collection syntax.NSID, rkey syntax.RecordKey) error
	ValidateRecord(collection syntax.NSID, rec map[string]any) error
}

// KeySource returns the key that signs an account's commits.
type KeySource interface {
	SigningKey(ctx context.Context, did syntax.DID) (atcrypto.PrivateKey, error)
}

// WriteGuard reports whether an account may write now; it returns a
// *pdserr.Error (AccountDeactivated, ...) when it may not.
type WriteGuard func(ctx context.Context, did syntax.DID) error

// Config holds the dependencies of a Service.
type Config struct {
	Store   Store
	Schemas Schemas
	Keys    KeySource
	// CanWrite is consulted under the account's write lock before every
	// commit; nil allows all writes.
	CanWrite WriteGuard
	// Now is the clock for event timestamps; nil means time.Now.
	Now func() time.Time
}

// Service is the repository engine. Writes to one account are serialised
// by a per-account lock; writes to different accounts and all reads run in
// parallel.
type Service struct {
	store    Store
	schemas  Schemas
	keys     KeySource
	canWrite WriteGuard
	now      func() time.Time

	// rkeys generates record keys; commit revs come from each repo's own
	// clock so that they can be kept above the stored rev.
	rkeys *syntax.TIDClock

	mu    sync.Mutex
	repos map[syntax.DID]*repoState

	// commits writes queued commits, several to a transaction.
	commits committer
}

// repoState is the cached, fully loaded MST of one repository. tree is nil
// until first use and again after any failed commit, because indigo mutates
// the tree in place and a failure may leave it half-modified.
type repoState struct {
	mu    sync.Mutex
	tree  *mst.Tree
	head  Head
	clock *syntax.TIDClock
	// nodes indexes the tree's nodes by CID for getBlocks; built on demand
	// and dropped by every commit.
	nodes map[cid.Cid]*mst.Node
	// last is the newest commit queued for the committer, nil once it is
	// known to be applied. While it is pending, tree and head are ahead of
	// storage.
	last *pending
	// gen counts reloads of tree from storage.
	gen uint64
}

// NewService returns a repository engine.
func NewService(cfg Config) *Service {
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	return &Service{
		store:    cfg.Store,
		schemas:  cfg.Schemas,
		keys:     cfg.Keys,
		canWrite: cfg.CanWrite,
		now:      now,
		rkeys:    syntax.NewTIDClock(0),
		repos:    map[syntax.DID]*repoState{},
	}
}

func (s *Service) state(did syntax.DID) *repoState {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.repos[did]
	if !ok {
		st = &repoState{}
		s.repos[did] = st
	}
	return st
}

// load makes st.tree the current tree of did as storage holds it: it
// waits for queued commits to be applied and rebuilds the tree from the
// record index (checked against the data root of the signed commit) if
// any of them was refused or the tree was dropped. Callers hold st.mu.
func (s *Service) load(ctx context.Context, did syntax.DID, st *repoState) error {
	return s.loadState(ctx, did, st, false)
}

// loadState is load; with speculative set, a tree ahead of storage (its
// newest commit still queued) is good enough, since a commit built on it
// is applied after the queued ones.
func (s *Service) loadState(ctx context.Context, did syntax.DID, st *repoState, speculative bool) error {
	if st.last != nil {
		if speculative && st.tree != nil && !st.last.finished() {
			return nil
		}
		// Commits are applied in order and one built on a refused commit
		// is refused too, so the newest one tells whether the tree
		// matches storage.
		settle(st)
	}
	if st.tree != nil {
		return nil
	}
	head, err := s.store.Head(ctx, did)
	if err != nil {
		if errors.Is(err, ErrNoRepo) {
			return pdserr.Wrap(err, pdserr.RepoNotFound, "Could not find repo for DID: "+did.String())
		}
		return fmt.Errorf("load head: %w", err)
	}
	keys := map[string]cid.Cid{}
	if err := s.store.Keys(ctx, did, func(k string, c cid.Cid) error {
		keys[k] = c
		return nil
	}); err != nil {
		return fmt.Errorf("load record index: %w", err)
	}
	tree, err := mst.LoadTreeFromMap(keys)
	if err != nil {
		return fmt.Errorf("build tree: %w", err)
	}
	root, err := tree.RootCID()
	if err != nil {
		return fmt.Errorf("build tree: %w", err)
	}
	if !root.Equals(head.Data) {
		return corrupt(did, fmt.Errorf("its %d indexed records give MST root %s but commit %s says %s",
			len(keys), root, head.Commit, head.Data))
	}
	if err := s.checkStored(ctx, did, head); err != nil {
		return err
	}
	st.tree = tree
	st.head = head
	st.clock = clockAfter(head.Rev)
	st.nodes = nil
	st.gen++
	return nil
}

// ErrCorrupt marks a repository whose stored state does not match its
// signed commit. The server then refuses to write or export it rather than
// sign new commits on top of damaged data; `pds check` says what is wrong.
var ErrCorrupt = errors.New("repository is damaged")

// corrupt wraps a finding as a named error whose message tells the client
// what happened without internals; the cause is logged.
func corrupt(did syntax.DID, cause error) error {
	return pdserr.Wrap(fmt.Errorf("%w: %s: %w", ErrCorrupt, did, cause), pdserr.InternalServerError,
		"The repository is damaged; the server refuses to change or export it until the operator repairs it (pds check)")
}

// checkStored verifies what the tree check cannot see: the signed commit
// block is present, hashes to its CID and names the stored root and rev,
// and every indexed record has its block.
func (s *Service) checkStored(ctx context.Context, did syntax.DID, head Head) error {
	data, err := s.store.Block(ctx, did, head.Commit)
	if errors.Is(err, ErrBlockNotFound) {
		return corrupt(did, fmt.Errorf("commit block %s is missing", head.Commit))
	}
	if err != nil {
		return fmt.Errorf("read commit: %w", err)
	}
	if c, err := head.Commit.Prefix().Sum(data); err != nil || !c.Equals(head.Commit) {
		return corrupt(did, fmt.Errorf("commit block %s does not hash to its CID", head.Commit))
	}
	var c atrepo.Commit
	if err := c.UnmarshalCBOR(bytes.NewReader(data)); err != nil {
		return corrupt(did, fmt.Errorf("commit block %s does not decode: %w", head.Commit, err))
	}
	if !c.Data.Equals(head.Data) || c.Rev != head.Rev.String() || c.DID != did.String() {
		return corrupt(did, fmt.Errorf("commit %s (data %s, rev %s) does not match the stored root (data %s, rev %s)", head.Commit, c.Data, c.Rev, head.Data, head.Rev))
	}
	missing, err := s.store.MissingBlocks(ctx, did)
	if err != nil {
		return fmt.Errorf("check record blocks: %w", err)
	}
	if len(missing) > 0 {
		return corrupt(did, fmt.Errorf("indexed records without their block: %s", strings.Join(missing, ", ")))
	}
	return nil
}

// clockAfter returns a TID clock whose next value is after rev, so revs keep
// increasing even if the system clock went backwards across a restart.
func clockAfter(rev syntax.TID) *syntax.TIDClock {
	c := syntax.NewTIDClock(0)
	if rev != "" {
		last := syntax.ClockFromTID(rev)
		c = &last
	}
	return c
}

// Create writes the genesis commit of a new, empty repository. It fails if
// the account already has one. events are appended with the commit (the
// caller supplies #identity/#account events for the new account).
func (s *Service) Create(ctx context.Context, did syntax.DID, extra func(Head, []byte) ([]sequencer.Event, error)) (Head, error) {
	st := s.state(did)
	st.mu.Lock()
	defer st.mu.Unlock()
	settle(st)
	if _, err := s.store.Head(ctx, did); err == nil {
		return Head{}, pdserr.New(pdserr.InvalidRequest, "repository already exists for %s", did)
	} else if !errors.Is(err, ErrNoRepo) {
		return Head{}, fmt.Errorf("read head: %w", err)
	}
	tree := mst.NewEmptyTree()
	rec := newRecorder()
	root, err := tree.WriteDiffBlocks(ctx, rec)
	if err != nil {
		return Head{}, fmt.Errorf("write empty tree: %w", err)
	}
	clock := syntax.NewTIDClock(0)
	commit, commitBlock, err := s.sign(ctx, did, *root, clock.Next())
	if err != nil {
		return Head{}, err
	}
	head := Head{Commit: commitBlock.CID, Data: *root, Rev: syntax.TID(commit.Rev)}
	b := &Batch{DID: did, Head: head, Rev: head.Rev, Put: []Block{commitBlock}}
	if extra != nil {
		car, err := writeCAR(commitBlock.CID, []Block{commitBlock})
		if err != nil {
			return Head{}, err
		}
		evs, err := extra(head, car)
		if err != nil {
			return Head{}, err
		}
		b.Events = evs
	}
	if _, err := s.store.Apply(ctx, b); err != nil {
		return Head{}, fmt.Errorf("apply genesis: %w", err)
	}
	st.tree, st.head, st.clock, st.nodes = &tree, head, clock, nil
	st.gen++
	return head, nil
}

// sign builds, signs and encodes the commit for data at rev.
func (s *Service) sign(ctx context.Context, did syntax.DID, data cid.Cid, rev syntax.TID) (*atrepo.Commit, Block, error) {
	key, err := s.keys.SigningKey(ctx, did)
	if err != nil {
		return nil, Block{}, fmt.Errorf("signing key: %w", err)
	}
	c := &atrepo.Commit{DID: did.String(), Version: atrepo.ATPROTO_REPO_VERSION, Data: data, Rev: rev.String()}
	if err := c.Sign(key); err != nil {
		return nil, Block{}, fmt.Errorf("sign commit: %w", err)
	}
	var buf bytes.Buffer
	if err := c.MarshalCBOR(&buf); err != nil {
		return nil, Block{}, fmt.Errorf("encode commit: %w", err)
	}
	cc, err := cborCID(buf.Bytes())
	if err != nil {
		return nil, Block{}, err
	}
	return c, Block{CID: cc, Data: buf.Bytes()}, nil
}

var cborPrefix = cid.NewPrefixV1(cid.DagCBOR, multihash.SHA2_256)

func cborCID(data []byte) (cid.Cid, error) {
	c, err := cborPrefix.Sum(data)
	if err != nil {
		return cid.Undef, fmt.Errorf("hash block: %w", err)
	}
	return c, nil
}

// Head returns the current head of did's repository.
func (s *Service) Head(ctx context.Context, did syntax.DID) (Head, error) {
	h, err := s.store.Head(ctx, did)
	if errors.Is(err, ErrNoRepo) {
		return Head{}, pdserr.Wrap(err, pdserr.RepoNotFound, "Could not find repo for DID: "+did.String())
	}
	return h, err
}

// Forget drops the cached tree of did, so the next write reloads it from
// storage.
func (s *Service) Forget(did syntax.DID) {
	st := s.state(did)
	st.mu.Lock()
	st.tree = nil
	st.mu.Unlock()
}

// Resign writes a new commit of the unchanged tree, signed with the
// account's current key, together with the events extra returns (given the
// new head and a CAR of the new commit). It is how a signing-key rotation
// becomes verifiable: relays check the latest commit against the key in
// the DID document.
func (s *Service) Resign(ctx context.Context, did syntax.DID, extra func(Head, []byte) ([]sequencer.Event, error)) (Head, error) {
	st := s.state(did)
	st.mu.Lock()
	defer st.mu.Unlock()
	if err := s.load(ctx, did, st); err != nil {
		return Head{}, err
	}
	prev := st.head
	rev := st.clock.Next()
	if rev <= prev.Rev {
		rev = syntax.NewTIDFromInteger(prev.Rev.Integer() + 1)
	}
	_, commitBlock, err := s.sign(ctx, did, prev.Data, rev)
	if err != nil {
		return Head{}, err
	}
	head := Head{Commit: commitBlock.CID, Data: prev.Data, Rev: rev}
	car, err := writeCAR(head.Commit, []Block{commitBlock})
	if err != nil {
		return Head{}, err
	}
	evs, err := extra(head, car)
	if err != nil {
		return Head{}, err
	}
	b := &Batch{DID: did, Prev: &prev, Head: head, Rev: rev, Put: []Block{commitBlock}, Events: evs}
	if _, err := s.store.Apply(ctx, b); err != nil {
		return Head{}, fmt.Errorf("apply re-signed commit: %w", err)
	}
	st.head = head
	return head, nil
}

// Verify reloads did's tree from storage and runs every check a first use
// runs: the tree rebuilt from the index has the signed data root, the
// commit block is sound and every indexed record has its block. The server
// calls it on start, so a damaged repository is refused at once.
func (s *Service) Verify(ctx context.Context, did syntax.DID) error {
	st := s.state(did)
	st.mu.Lock()
	defer st.mu.Unlock()
	st.tree = nil
	return s.load(ctx, did, st)
}
