package repo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/atdata"
	atrepo "github.com/bluesky-social/indigo/atproto/repo"
	"github.com/bluesky-social/indigo/atproto/repo/mst"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"

	"stratus/internal/pdserr"
	"stratus/internal/sequencer"
)

// Replacement is a whole repository that replaces an account's current one
// (a repository import), applied by a Replacer in one transaction.
type Replacement struct {
	DID syntax.DID
	// Prev is the head being replaced; the store refuses the replacement
	// if the stored head differs.
	Prev Head
	// Head is the new head; Commit is its signed commit block.
	Head   Head
	Commit Block
	// Records calls fn for every record of the new tree, in key order.
	Records func(fn func(ImportedRecord) error) error
	Events  []sequencer.Event
}

// ImportedRecord is one record of an imported repository with the blobs
// it references. Blobs the server does not hold are recorded as missing
// (com.atproto.repo.listMissingBlobs) rather than refused.
type ImportedRecord struct {
	IndexEntry
	Data  []byte
	Blobs []BlobRef
}

// Replacer is implemented by stores that can replace a repository whole.
type Replacer interface {
	// Replace drops every block, record and blob reference of r.DID and
	// writes the new repository and r.Events in one transaction. It
	// refuses with ErrActive unless the account is deactivated at commit
	// time.
	Replace(ctx context.Context, r *Replacement) ([]int64, error)
}

// ErrActive is returned by Replacer.Replace for an account that is not
// deactivated.
var ErrActive = errors.New("account is not deactivated")

// ImportOptions say what an import checks and announces.
type ImportOptions struct {
	// Keys are the public keys the imported commit may be signed with:
	// the account's key in its DID document (the previous host's, during
	// a migration) and this server's own (re-importing an export).
	Keys []atcrypto.PublicKey
	// Events returns the events appended with the import, given the new
	// head and a CAR holding only the new commit.
	Events func(head Head, commitCAR []byte) ([]sequencer.Event, error)
	// MaxSize is the largest CAR accepted, in bytes; 0 means no limit.
	MaxSize int64
	// TempDir holds the CAR while it is checked ("" is the system's).
	TempDir string
}

// ImportResult describes a completed import.
type ImportResult struct {
	Head Head
	// ImportedCommit and ImportedRev name the commit the CAR carried.
	ImportedCommit cid.Cid
	ImportedRev    syntax.TID
	Records        int
	// Blobs counts the distinct blobs the records reference.
	Blobs int
}

// ImportStream spools body (a CARv1 of a whole repository, as
// com.atproto.sync.getRepo serves it) to a temporary file, refusing it
// with PayloadTooLarge past opts.MaxSize, and imports it with Import. The
// body is never held in memory.
func (s *Service) ImportStream(ctx context.Context, did syntax.DID, body io.Reader, opts ImportOptions) (*ImportResult, error) {
	f, err := os.CreateTemp(opts.TempDir, "import-*.car")
	if err != nil {
		return nil, fmt.Errorf("spool import: %w", err)
	}
	defer func() {
		f.Close()
		os.Remove(f.Name())
	}()
	src := body
	if opts.MaxSize > 0 {
		src = io.LimitReader(body, opts.MaxSize+1)
	}
	n, err := io.Copy(f, src)
	if err != nil {
		return nil, fmt.Errorf("spool import: %w", err)
	}
	if opts.MaxSize > 0 && n > opts.MaxSize {
		return nil, pdserr.New(pdserr.PayloadTooLarge, "Repository import is larger than %d bytes", opts.MaxSize)
	}
	return s.Import(ctx, did, f, n, opts)
}

// Import replaces did's repository with the one in the CAR held in the
// first size bytes of car. The CAR must have one root, a version-3 commit
// for did signed by one of opts.Keys, and a complete, canonical MST whose
// every record is present and decodes as atproto data. Records are not
// checked against lexicons, as the reference PDS does not: a repository
// written elsewhere under other schema versions must still move.
//
// The tree is stored under a fresh commit signed with this server's key,
// with a revision after both the imported and the current one, so the
// repository verifies against the DID document once it names this server.
// Blob references are recorded, held or not. The account must be
// deactivated (a migration target); an active account is refused, so a
// live repository is never swapped under its followers.
func (s *Service) Import(ctx context.Context, did syntax.DID, car io.ReaderAt, size int64, opts ImportOptions) (*ImportResult, error) {
	idx, err := indexCAR(car, size)
	if err != nil {
		return nil, err
	}
	if len(idx.roots) != 1 {
		return nil, invalidRepo("Expected one root in the CAR file, found %d", len(idx.roots))
	}
	commitCID := idx.roots[0]
	commitData, err := idx.bytes(commitCID)
	if err != nil {
		return nil, invalidRepo("The CAR file does not hold its root commit %s", commitCID)
	}
	var commit atrepo.Commit
	if err := commit.UnmarshalCBOR(bytes.NewReader(commitData)); err != nil {
		return nil, invalidRepo("The root block is not a commit: %v", err)
	}
	if err := commit.VerifyStructure(); err != nil {
		return nil, invalidRepo("Invalid commit: %v", err)
	}
	if commit.DID != did.String() {
		return nil, invalidRepo("DID mismatch: the repository is %s, not %s", commit.DID, did)
	}
	importedRev, err := syntax.ParseTID(commit.Rev)
	if err != nil {
		return nil, invalidRepo("Invalid commit rev %q", commit.Rev)
	}
	if !signedByOne(&commit, opts.Keys) {
		return nil, invalidRepo("The commit's signature does not verify against the account's signing key")
	}

	tree, err := loadImportedTree(idx, commit.Data)
	if err != nil {
		return nil, err
	}
	recs, nblobs, err := checkRecords(idx, tree)
	if err != nil {
		return nil, err
	}

	st := s.state(did)
	st.mu.Lock()
	defer st.mu.Unlock()
	settle(st) // the head read next must include every queued commit
	prev, err := s.Head(ctx, did)
	if err != nil {
		return nil, err
	}
	clock := clockAfter(max(prev.Rev, importedRev))
	rev := clock.Next()
	if rev <= prev.Rev || rev <= importedRev {
		rev = syntax.NewTIDFromInteger(max(prev.Rev.Integer(), importedRev.Integer()) + 1)
	}
	_, commitBlock, err := s.sign(ctx, did, commit.Data, rev)
	if err != nil {
		return nil, err
	}
	head := Head{Commit: commitBlock.CID, Data: commit.Data, Rev: rev}
	rp := &Replacement{DID: did, Prev: prev, Head: head, Commit: commitBlock}
	if opts.Events != nil {
		carBytes, err := writeCAR(commitBlock.CID, []Block{commitBlock})
		if err != nil {
			return nil, err
		}
		if rp.Events, err = opts.Events(head, carBytes); err != nil {
			return nil, err
		}
	}
	rp.Records = func(fn func(ImportedRecord) error) error {
		for _, r := range recs {
			data, err := idx.bytes(r.CID)
			if err != nil {
				return err
			}
			r.Data = data
			if err := fn(r); err != nil {
				return err
			}
		}
		return nil
	}
	replacer, ok := s.store.(Replacer)
	if !ok {
		return nil, pdserr.New(pdserr.MethodNotImplemented, "This server's storage cannot import repositories")
	}
	// Whatever happens, the cached tree no longer describes storage.
	st.tree, st.nodes = nil, nil
	if _, err := replacer.Replace(ctx, rp); err != nil {
		if errors.Is(err, ErrActive) {
			return nil, pdserr.Wrap(err, pdserr.InvalidRequest,
				"Repository import is only allowed while the account is deactivated (a migration target); deactivate it first")
		}
		return nil, fmt.Errorf("import repository: %w", err)
	}
	return &ImportResult{Head: head, ImportedCommit: commitCID, ImportedRev: importedRev, Records: len(recs), Blobs: nblobs}, nil
}

// signedByOne reports whether one of keys verifies c's signature.
func signedByOne(c *atrepo.Commit, keys []atcrypto.PublicKey) bool {
	for _, k := range keys {
		if k != nil && c.VerifySignature(k) == nil {
			return true
		}
	}
	return false
}

// loadImportedTree loads the MST under root from the CAR with indigo and
// checks that it is complete, well formed and canonical: rebuilt from its
// own keys it must give the same root, so no other tree shape can hide
// behind the signed data CID.
func loadImportedTree(idx *carIndex, root cid.Cid) (*mst.Tree, error) {
	if err := idx.checkTreeShape(root); err != nil {
		return nil, err
	}
	tree, err := mst.LoadTreeFromStore(context.Background(), idx, root)
	if err != nil {
		return nil, invalidRepo("The MST does not load: %v", err)
	}
	if tree.IsPartial() {
		return nil, invalidRepo("The MST is incomplete")
	}
	if err := tree.Verify(); err != nil {
		return nil, invalidRepo("The MST is malformed: %v", err)
	}
	keys := map[string]cid.Cid{}
	if err := tree.WriteToMap(keys); err != nil {
		return nil, invalidRepo("The MST is malformed: %v", err)
	}
	canon, err := mst.LoadTreeFromMap(keys)
	if err != nil {
		return nil, invalidRepo("The MST is malformed: %v", err)
	}
	got, err := canon.RootCID()
	if err != nil {
		return nil, fmt.Errorf("rebuild tree: %w", err)
	}
	if !got.Equals(root) {
		return nil, invalidRepo("The MST is not in canonical form: its keys give root %s, not %s", got, root)
	}
	return canon, nil
}

// checkRecords reads every record of tree from the CAR, in key order:
// each key must be collection/rkey, each record present and decodable as
// atproto data. It returns the records (without their bytes) with their
// blob references, and how many distinct blobs they reference.
func checkRecords(idx *carIndex, tree *mst.Tree) ([]ImportedRecord, int, error) {
	var recs []ImportedRecord
	err := tree.Walk(func(key []byte, c cid.Cid) error {
		k := string(key)
		coll, rkey, ok := strings.Cut(k, "/")
		nsid, err := syntax.ParseNSID(coll)
		if !ok || err != nil {
			return invalidRepo("Invalid record path %q", k)
		}
		rk, err := syntax.ParseRecordKey(rkey)
		if err != nil {
			return invalidRepo("Invalid record path %q", k)
		}
		data, err := idx.bytes(c)
		if errors.Is(err, errMissingBlock) {
			return invalidRepo("Record %s is missing from the CAR file", k)
		}
		if err != nil {
			return err
		}
		rec, err := atdata.UnmarshalCBOR(data)
		if err != nil {
			return invalidRepo("Could not parse record at '%s': %v", k, err)
		}
		r := ImportedRecord{IndexEntry: IndexEntry{Collection: nsid, RKey: rk, CID: c}}
		seen := map[string]bool{}
		for _, b := range atdata.ExtractBlobs(rec) {
			bc := cid.Cid(b.Ref)
			if !bc.Defined() || seen[bc.KeyString()] {
				continue
			}
			seen[bc.KeyString()] = true
			r.Blobs = append(r.Blobs, BlobRef{Collection: nsid, RKey: rk, CID: bc, MimeType: b.MimeType, Size: b.Size})
		}
		recs = append(recs, r)
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	sort.SliceStable(recs, func(i, j int) bool {
		a, b := recs[i], recs[j]
		if a.Collection != b.Collection {
			return a.Collection < b.Collection
		}
		return a.RKey < b.RKey
	})
	distinct := map[string]bool{}
	for _, r := range recs {
		for _, b := range r.Blobs {
			distinct[b.CID.KeyString()] = true
		}
	}
	return recs, len(distinct), nil
}
