// Package integrity verifies a data directory's database the way a relay
// would verify the repository, and more: the file itself, the signed
// commit, the Merkle Search Tree rebuilt from the record index, every
// record block, the firehose log and the credential tables. It can also
// repair what is derivable (the record index and stray or missing blocks)
// from the blocks the signed commit and the firehose log still hold,
// without ever re-signing or changing signed data.
//
// Everything is read through a Store that presents one consistent
// snapshot, so a check may run while the server is writing.
package integrity

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/atdata"
	atrepo "github.com/bluesky-social/indigo/atproto/repo"
	"github.com/bluesky-social/indigo/atproto/repo/mst"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"
)

// Store is a consistent view of the database. internal/sqlite's Inspector
// implements it.
type Store interface {
	IntegrityCheck(ctx context.Context) ([]string, error)
	Accounts(ctx context.Context) ([]Account, error)
	Head(ctx context.Context, did string) (HeadRow, bool, error)
	Block(ctx context.Context, did string, cid []byte) ([]byte, bool, error)
	EachBlock(ctx context.Context, did string, fn func(cid []byte, rev string, data []byte) error) error
	EachRecord(ctx context.Context, did string, fn func(collection, rkey string, cid []byte, rev string) error) error
	EachEvent(ctx context.Context, fn func(seq int64, did, typ string, payload []byte) error) error
	SeqCounter(ctx context.Context) (int64, error)
	SessionProblems(ctx context.Context) ([]string, error)
	EachBlobRef(ctx context.Context, did string, fn func(collection, rkey, cid string) error) error
	EachBlobRow(ctx context.Context, did string, fn func(row BlobRow) error) error
}

// Account is an account row.
type Account struct {
	DID    string
	Status string
}

// HeadRow is a stored repository root with raw CID bytes.
type HeadRow struct {
	Commit, Data []byte
	Rev          string
}

// KeyFunc returns the public key that must have signed did's commits.
type KeyFunc func(did string) (atcrypto.PublicKey, error)

// Problem is one thing found wrong.
type Problem struct {
	// Where names the part of the data: "database", "firehose",
	// "sessions", or an account DID.
	Where string
	// Message says what is wrong, naming the record path, CID or page.
	Message string
}

func (p Problem) String() string { return p.Where + ": " + p.Message }

// RepoSummary describes one checked repository.
type RepoSummary struct {
	DID     string
	Commit  string
	Rev     string
	Records int
	Blocks  int
	// Blobs counts the blobs recorded as held.
	Blobs int
}

// Report is the outcome of a check or repair.
type Report struct {
	Repos    []RepoSummary
	Events   int
	FirstSeq int64
	LastSeq  int64
	Counter  int64
	Problems []Problem
	// Repaired lists what a repair changed.
	Repaired []string
	// Notes are worth knowing but not problems (blobs an account being
	// migrated has not uploaded yet).
	Notes []string
}

// OK reports whether nothing is wrong.
func (r *Report) OK() bool { return len(r.Problems) == 0 }

func (r *Report) add(where, format string, args ...any) {
	r.Problems = append(r.Problems, Problem{Where: where, Message: fmt.Sprintf(format, args...)})
}

// Write prints the report for people.
func (r *Report) Write(w io.Writer) {
	for _, s := range r.Repos {
		fmt.Fprintf(w, "repository %s: commit %s rev %s, %d records, %d blocks, %d blobs\n", s.DID, s.Commit, s.Rev, s.Records, s.Blocks, s.Blobs)
	}
	if r.Events > 0 {
		fmt.Fprintf(w, "firehose: %d events retained (seq %d to %d), counter at %d\n", r.Events, r.FirstSeq, r.LastSeq, r.Counter)
	} else {
		fmt.Fprintf(w, "firehose: no events retained, counter at %d\n", r.Counter)
	}
	for _, s := range r.Repaired {
		fmt.Fprintf(w, "repaired: %s\n", s)
	}
	for _, s := range r.Notes {
		fmt.Fprintf(w, "note: %s\n", s)
	}
	if r.OK() {
		fmt.Fprintln(w, "ok: no problems found")
		return
	}
	fmt.Fprintf(w, "%d problem(s):\n", len(r.Problems))
	for _, p := range r.Problems {
		fmt.Fprintf(w, "  %s\n", p)
	}
}

// Check verifies everything the Store holds and returns a report; the
// error is for a failure to read at all. blobs is the blob store the
// database's blobs are kept in; when nil, only the blob tables are checked,
// not the bytes.
func Check(ctx context.Context, st Store, keys KeyFunc, blobs BlobStore) (*Report, error) {
	r := &Report{}
	lines, err := st.IntegrityCheck(ctx)
	if err != nil {
		r.add("database", "integrity_check failed: %v", err)
	}
	for _, l := range lines {
		r.add("database", "%s", l)
	}
	accounts, err := st.Accounts(ctx)
	if err != nil {
		r.add("database", "cannot read accounts: %v", err)
	}
	for _, a := range accounts {
		s := checkRepo(ctx, st, keys, a, r)
		if s.hasHead {
			b := checkBlobs(ctx, st, blobs, a, s, r)
			r.Repos[len(r.Repos)-1].Blobs = len(b.rows)
		}
	}
	checkEvents(ctx, st, r)
	sess, err := st.SessionProblems(ctx)
	if err != nil {
		r.add("sessions", "cannot read credential tables: %v", err)
	}
	for _, s := range sess {
		r.add("sessions", "%s", s)
	}
	return r, nil
}

// repoState is what checking one repository learned, which repair reuses.
type repoState struct {
	did     string
	head    HeadRow
	commit  cid.Cid
	data    cid.Cid
	hasHead bool
	// commitOK: the commit block is present, hashes to its CID and
	// decodes to a commit naming the stored data root and rev.
	commitOK bool
	index    map[string]indexRow // MST key -> row
	badRows  []string            // MST keys of rows that do not parse
	blocks   map[string]blockRow // CID bytes -> block
	// refs: the blobs each indexed record references, for the records
	// whose block could be read.
	refs map[string][]atdata.Blob
	root cid.Cid // MST root rebuilt from the index
}

type indexRow struct {
	cid cid.Cid
	rev string
}

type blockRow struct {
	rev    string
	hashOK bool
}

func checkRepo(ctx context.Context, st Store, keys KeyFunc, a Account, r *Report) *repoState {
	s := &repoState{did: a.DID, index: map[string]indexRow{}, blocks: map[string]blockRow{}, refs: map[string][]atdata.Blob{}}
	did := a.DID
	head, ok, err := st.Head(ctx, did)
	if err != nil {
		r.add(did, "cannot read repository root: %v", err)
		return s
	}
	if !ok {
		r.add(did, "account has no repository (its genesis commit was interrupted; the server creates it at the next start)")
		return s
	}
	s.head, s.hasHead = head, true
	if s.commit, err = cid.Cast(head.Commit); err != nil {
		r.add(did, "repository root names an invalid commit CID %x: %v", head.Commit, err)
	}
	if s.data, err = cid.Cast(head.Data); err != nil {
		r.add(did, "repository root names an invalid data CID %x: %v", head.Data, err)
	}
	sum := RepoSummary{DID: did, Commit: s.commit.String(), Rev: head.Rev}

	// Blocks: each must hash to its CID.
	if err := st.EachBlock(ctx, did, func(cb []byte, rev string, data []byte) error {
		b := blockRow{rev: rev}
		c, err := cid.Cast(cb)
		if err != nil {
			r.add(did, "block with invalid CID %x", cb)
		} else if b.hashOK = hashes(c, data); !b.hashOK {
			r.add(did, "block %s: contents do not hash to its CID", c)
		}
		s.blocks[string(cb)] = b
		return nil
	}); err != nil {
		r.add(did, "cannot read blocks: %v", err)
	}
	sum.Blocks = len(s.blocks)

	// The signed commit.
	if s.commit.Defined() {
		s.commitOK = checkCommit(ctx, st, keys, s, r)
	}

	// The record index and the record blocks it names.
	if err := st.EachRecord(ctx, did, func(coll, rkey string, cb []byte, rev string) error {
		key := coll + "/" + rkey
		if _, err := syntax.ParseNSID(coll); err != nil {
			r.add(did, "record %s: invalid collection: %v", key, err)
			s.badRows = append(s.badRows, key)
			return nil
		}
		if _, err := syntax.ParseRecordKey(rkey); err != nil {
			r.add(did, "record %s: invalid record key: %v", key, err)
			s.badRows = append(s.badRows, key)
			return nil
		}
		c, err := cid.Cast(cb)
		if err != nil {
			r.add(did, "record %s: invalid CID %x", key, cb)
			s.badRows = append(s.badRows, key)
			return nil
		}
		s.index[key] = indexRow{cid: c, rev: rev}
		b, ok := s.blocks[string(cb)]
		switch {
		case !ok:
			r.add(did, "record %s: block %s is missing", key, c)
		case !b.hashOK:
			r.add(did, "record %s: block %s is damaged", key, c)
		default:
			data, _, err := st.Block(ctx, did, cb)
			if err != nil {
				r.add(did, "record %s: cannot read block %s: %v", key, c, err)
				break
			}
			rec, err := atdata.UnmarshalCBOR(data)
			if err != nil {
				r.add(did, "record %s: block %s does not decode: %v", key, c, err)
				break
			}
			if t, _ := rec["$type"].(string); t != coll {
				r.add(did, "record %s: $type is %q, not its collection", key, t)
			}
			s.refs[key] = atdata.ExtractBlobs(rec)
		}
		return nil
	}); err != nil {
		r.add(did, "cannot read record index: %v", err)
	}
	sum.Records = len(s.index)

	// The tree rebuilt from the index must be the one the commit signed.
	if root, err := rootOf(s.index); err != nil {
		r.add(did, "cannot build the MST from the record index: %v", err)
	} else {
		s.root = root
		if s.data.Defined() && !root.Equals(s.data) {
			r.add(did, "MST rebuilt from the %d indexed records has root %s, but the signed commit says %s", len(s.index), root, s.data)
		}
	}

	// Every stored block is the commit or an indexed record.
	referenced := map[string]bool{string(head.Commit): true}
	for _, row := range s.index {
		referenced[string(row.cid.Bytes())] = true
	}
	var strays []string
	for cb := range s.blocks {
		if !referenced[cb] {
			c, _ := cid.Cast([]byte(cb))
			strays = append(strays, c.String())
		}
	}
	sort.Strings(strays)
	for _, c := range strays {
		r.add(did, "block %s is stored but neither the commit nor an indexed record", c)
	}
	r.Repos = append(r.Repos, sum)
	return s
}

// checkCommit verifies the commit block of s and its signature.
func checkCommit(ctx context.Context, st Store, keys KeyFunc, s *repoState, r *Report) bool {
	did := s.did
	b, ok := s.blocks[string(s.head.Commit)]
	if !ok {
		r.add(did, "commit block %s is missing", s.commit)
		return false
	}
	if !b.hashOK {
		r.add(did, "commit block %s is damaged", s.commit)
		return false
	}
	data, _, err := st.Block(ctx, did, s.head.Commit)
	if err != nil {
		r.add(did, "cannot read commit block %s: %v", s.commit, err)
		return false
	}
	var c atrepo.Commit
	if err := c.UnmarshalCBOR(bytes.NewReader(data)); err != nil {
		r.add(did, "commit block %s does not decode: %v", s.commit, err)
		return false
	}
	ok = true
	if err := c.VerifyStructure(); err != nil {
		r.add(did, "commit %s: %v", s.commit, err)
		ok = false
	}
	if c.DID != did {
		r.add(did, "commit %s is for %s", s.commit, c.DID)
		ok = false
	}
	if s.data.Defined() && !c.Data.Equals(s.data) {
		r.add(did, "commit %s has data root %s but the repository root row says %s", s.commit, c.Data, s.data)
		ok = false
	}
	if c.Rev != s.head.Rev {
		r.add(did, "commit %s has rev %s but the repository root row says %s", s.commit, c.Rev, s.head.Rev)
		ok = false
	}
	if keys == nil {
		return ok
	}
	pub, err := keys(did)
	if err != nil {
		r.add(did, "no signing key to verify commit %s: %v", s.commit, err)
		return ok
	}
	if err := c.VerifySignature(pub); err != nil {
		r.add(did, "commit %s: signature does not verify with %s: %v", s.commit, pub.DIDKey(), err)
	}
	return ok
}

func hashes(c cid.Cid, data []byte) bool {
	got, err := c.Prefix().Sum(data)
	return err == nil && got.Equals(c)
}

func rootOf(index map[string]indexRow) (cid.Cid, error) {
	m := make(map[string]cid.Cid, len(index))
	for k, v := range index {
		m[k] = v.cid
	}
	tree, err := mst.LoadTreeFromMap(m)
	if err != nil {
		return cid.Undef, err
	}
	root, err := tree.RootCID()
	if err != nil {
		return cid.Undef, err
	}
	return *root, nil
}

// checkEvents verifies the firehose log: seqs below the counter, every
// event decodes, and each repository's newest commit-bearing event names
// its current commit.
func checkEvents(ctx context.Context, st Store, r *Report) {
	counter, err := st.SeqCounter(ctx)
	if err != nil {
		r.add("firehose", "cannot read the sequence counter: %v", err)
	}
	r.Counter = counter
	latest := map[string]commitRef{}
	var prev int64
	err = st.EachEvent(ctx, func(seq int64, did, typ string, payload []byte) error {
		if r.Events == 0 {
			r.FirstSeq = seq
		}
		r.Events++
		r.LastSeq = seq
		if seq <= prev {
			r.add("firehose", "event %d follows %d", seq, prev)
		}
		prev = seq
		ref, err := decodeEvent(typ, payload)
		if err != nil {
			r.add("firehose", "event %d (%s of %s): %v", seq, typ, did, err)
			return nil
		}
		if ref.did != "" && ref.did != did {
			r.add("firehose", "event %d is filed under %s but names %s", seq, did, ref.did)
		}
		if ref.commit.Defined() {
			ref.seq = seq
			latest[did] = ref
		}
		return nil
	})
	if err != nil {
		r.add("firehose", "cannot read events: %v", err)
	}
	if r.Events > 0 && r.LastSeq > counter {
		r.add("firehose", "newest event has seq %d but the counter is at %d: seqs would be reused", r.LastSeq, counter)
	}
	for _, s := range r.Repos {
		ref, ok := latest[s.DID]
		if !ok {
			continue
		}
		if ref.commit.String() != s.Commit || ref.rev != s.Rev {
			r.add("firehose", "newest commit event of %s (seq %d) announces commit %s rev %s, but the repository is at %s rev %s",
				s.DID, ref.seq, ref.commit, ref.rev, s.Commit, s.Rev)
		}
	}
}

type commitRef struct {
	did    string
	commit cid.Cid
	rev    string
	seq    int64
}

// RepoProblems returns the problems of one DID; for tests and callers
// that act on a single account.
func (r *Report) RepoProblems(did string) []string {
	var out []string
	for _, p := range r.Problems {
		if p.Where == did {
			out = append(out, p.Message)
		}
	}
	return out
}

// Summary returns the problems as one line each.
func (r *Report) Summary() string {
	var b strings.Builder
	for _, p := range r.Problems {
		b.WriteString(p.String())
		b.WriteByte('\n')
	}
	return b.String()
}
