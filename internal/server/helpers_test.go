package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/identity"
	atrepo "github.com/bluesky-social/indigo/atproto/repo"
	"github.com/bluesky-social/indigo/atproto/repo/mst"
	"github.com/bluesky-social/indigo/atproto/syntax"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	car "github.com/ipld/go-car"
	"github.com/multiformats/go-multihash"

	"stratus/internal/pdstest"
)

// XRPC method names used across the tests.
const (
	describeServer     = "com.atproto.server.describeServer"
	activateAccount    = "com.atproto.server.activateAccount"
	deactivateAccount  = "com.atproto.server.deactivateAccount"
	checkAccountStatus = "com.atproto.server.checkAccountStatus"
	resolveHandle      = "com.atproto.identity.resolveHandle"
	createRecord       = "com.atproto.repo.createRecord"
	putRecord          = "com.atproto.repo.putRecord"
	deleteRecord       = "com.atproto.repo.deleteRecord"
	applyWrites        = "com.atproto.repo.applyWrites"
	getRecord          = "com.atproto.repo.getRecord"
	listRecords        = "com.atproto.repo.listRecords"
	describeRepo       = "com.atproto.repo.describeRepo"
	getRepo            = "com.atproto.sync.getRepo"
	getLatestCommit    = "com.atproto.sync.getLatestCommit"
	getRepoStatus      = "com.atproto.sync.getRepoStatus"
	listRepos          = "com.atproto.sync.listRepos"
	getBlocks          = "com.atproto.sync.getBlocks"
	syncGetRecord      = "com.atproto.sync.getRecord"
)

// Collections used by the tests: one with a lexicon, one without.
const (
	postColl    = "app.bsky.feed.post"
	profileColl = "app.bsky.actor.profile"
	unknownColl = "com.example.thing"
)

const (
	get  = http.MethodGet
	post = http.MethodPost
)

// q builds query values from key, value pairs.
func q(kv ...string) url.Values {
	v := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Add(kv[i], kv[i+1])
	}
	return v
}

// obj is a JSON object literal.
type obj = map[string]any

func thing(n int) obj { return obj{"$type": unknownColl, "n": n} }

// raw sends a body verbatim (as []byte, so Do does not re-encode it).
func raw(s string) []byte { return []byte(s) }

func decode(t testing.TB, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("decode %s: %v", truncate(b), err)
	}
}

func truncate(b []byte) string {
	if len(b) > 400 {
		return string(b[:400]) + "..."
	}
	return string(b)
}

// writeOut is the answer of createRecord and putRecord.
type writeOut = pdstest.WriteResult

// record is one entry of getRecord and listRecords answers.
type record struct {
	URI   string         `json:"uri"`
	CID   string         `json:"cid"`
	Value map[string]any `json:"value"`
}

func (r record) rkey() string {
	u, err := syntax.ParseATURI(r.URI)
	if err != nil {
		return ""
	}
	return u.RecordKey().String()
}

// listPage is the answer of listRecords.
type listPage struct {
	Cursor  string   `json:"cursor"`
	Records []record `json:"records"`
}

// listAll pages through a collection and returns every record in order.
func listAll(t testing.TB, s *pdstest.Server, coll string, limit int, reverse bool) []record {
	t.Helper()
	var all []record
	cursor := ""
	for page := 0; ; page++ {
		if page > 10000 {
			t.Fatalf("listRecords does not terminate")
		}
		v := q("repo", s.DID(), "collection", coll, "limit", fmt.Sprint(limit))
		if reverse {
			v.Set("reverse", "true")
		}
		if cursor != "" {
			v.Set("cursor", cursor)
		}
		var p listPage
		s.Call(t, get, listRecords, v, nil, "", &p)
		if len(p.Records) > limit {
			t.Fatalf("page of %d records with limit %d", len(p.Records), limit)
		}
		all = append(all, p.Records...)
		if p.Cursor == "" {
			return all
		}
		if len(p.Records) == 0 {
			t.Fatalf("empty page with cursor %q", p.Cursor)
		}
		cursor = p.Cursor
	}
}

// carFile is a parsed CARv1.
type carFile struct {
	roots  []cid.Cid
	blocks map[cid.Cid][]byte
	order  []cid.Cid
}

// parseCAR decodes a CARv1 and checks that every block hashes to its CID
// and appears once.
func parseCAR(t testing.TB, b []byte) carFile {
	t.Helper()
	cr, err := car.NewCarReader(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("read CAR header: %v", err)
	}
	if cr.Header.Version != 1 {
		t.Fatalf("CAR version %d, want 1", cr.Header.Version)
	}
	f := carFile{roots: cr.Header.Roots, blocks: map[cid.Cid][]byte{}}
	for {
		blk, err := cr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("read CAR block: %v", err)
		}
		c := blk.Cid()
		sum, err := c.Prefix().Sum(blk.RawData())
		if err != nil || !sum.Equals(c) {
			t.Fatalf("CAR block %s does not hash to its CID (got %s, %v)", c, sum, err)
		}
		if _, dup := f.blocks[c]; dup {
			t.Errorf("CAR holds block %s twice", c)
		}
		f.blocks[c] = blk.RawData()
		f.order = append(f.order, c)
	}
	if len(f.roots) != 1 {
		t.Fatalf("CAR has %d roots, want 1", len(f.roots))
	}
	return f
}

// store returns a block store over the CAR's blocks, for indigo's loaders.
func (f carFile) store(t testing.TB) *atrepo.TinyBlockstore {
	t.Helper()
	bs := atrepo.NewTinyBlockstore()
	for c, data := range f.blocks {
		blk, err := blocks.NewBlockWithCid(data, c)
		if err != nil {
			t.Fatal(err)
		}
		if err := bs.Put(context.Background(), blk); err != nil {
			t.Fatal(err)
		}
	}
	return bs
}

// commit decodes and structurally checks the commit block of the root.
func (f carFile) commit(t testing.TB) *atrepo.Commit {
	t.Helper()
	data, ok := f.blocks[f.roots[0]]
	if !ok {
		t.Fatalf("CAR does not hold its root block %s", f.roots[0])
	}
	var c atrepo.Commit
	if err := c.UnmarshalCBOR(bytes.NewReader(data)); err != nil {
		t.Fatalf("decode commit: %v", err)
	}
	if err := c.VerifyStructure(); err != nil {
		t.Fatalf("commit structure: %v", err)
	}
	return &c
}

// repoSnapshot is a repository checked from a full getRepo CAR.
type repoSnapshot struct {
	commitCID cid.Cid
	commit    *atrepo.Commit
	records   map[string]cid.Cid // collection/rkey -> record CID
	blocks    int
}

// verifyFullRepo checks a complete repository export: the commit is signed
// by pub, indigo loads the CAR and verifies the MST, every record block is
// present, and every block is reachable from the root (nothing extra).
func verifyFullRepo(t testing.TB, did string, pub atcrypto.PublicKey, b []byte) repoSnapshot {
	t.Helper()
	ctx := context.Background()
	f := parseCAR(t, b)
	commit := f.commit(t)
	if commit.DID != did {
		t.Errorf("commit DID %q, want %q", commit.DID, did)
	}
	if err := commit.VerifySignature(pub); err != nil {
		t.Errorf("commit signature: %v", err)
	}
	if _, err := syntax.ParseTID(commit.Rev); err != nil {
		t.Errorf("commit rev %q: %v", commit.Rev, err)
	}
	c2, r, err := atrepo.LoadRepoFromCAR(ctx, bytes.NewReader(b))
	if err != nil {
		t.Fatalf("indigo LoadRepoFromCAR: %v", err)
	}
	if c2.Rev != commit.Rev {
		t.Errorf("indigo read rev %s, want %s", c2.Rev, commit.Rev)
	}
	if err := r.MST.Verify(); err != nil {
		t.Errorf("MST.Verify: %v", err)
	}
	if r.MST.IsPartial() {
		t.Errorf("MST is partial: the CAR misses tree nodes")
	}
	records := map[string]cid.Cid{}
	if err := r.MST.Walk(func(k []byte, v cid.Cid) error {
		records[string(k)] = v
		return nil
	}); err != nil {
		t.Fatalf("walk MST: %v", err)
	}

	// Reachability: commit -> MST nodes -> record blocks.
	reach := map[cid.Cid]bool{f.roots[0]: true}
	stack := []cid.Cid{commit.Data}
	for len(stack) > 0 {
		c := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if reach[c] {
			continue
		}
		reach[c] = true
		data, ok := f.blocks[c]
		if !ok {
			t.Errorf("MST node %s missing from CAR", c)
			continue
		}
		nd, err := mst.NodeDataFromCBOR(bytes.NewReader(data))
		if err != nil {
			t.Errorf("decode MST node %s: %v", c, err)
			continue
		}
		if nd.Left != nil {
			stack = append(stack, *nd.Left)
		}
		for _, e := range nd.Entries {
			if e.Right != nil {
				stack = append(stack, *e.Right)
			}
			reach[e.Value] = true
		}
	}
	for path, c := range records {
		if _, ok := f.blocks[c]; !ok {
			t.Errorf("record block %s of %s missing from CAR", c, path)
		}
	}
	for c := range f.blocks {
		if !reach[c] {
			t.Errorf("CAR holds block %s that is not reachable from the commit", c)
		}
	}
	return repoSnapshot{commitCID: f.roots[0], commit: commit, records: records, blocks: len(f.blocks)}
}

// fetchRepo downloads the full repository with the admin token (so that it
// also works while the account is deactivated).
func fetchRepo(t testing.TB, s *pdstest.Server) []byte {
	t.Helper()
	status, b := s.Do(t, get, getRepo, q("did", s.DID()), nil, s.AdminToken())
	if status != http.StatusOK {
		t.Fatalf("getRepo: %d %s", status, truncate(b))
	}
	return b
}

// didDocKey fetches /.well-known/did.json and returns the atproto signing
// key and PDS endpoint it declares, parsed by indigo.
func didDocKey(t testing.TB, s *pdstest.Server) (atcrypto.PublicKey, identity.Identity) {
	t.Helper()
	resp, b := s.Raw(t, get, "/.well-known/did.json", nil, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("did.json: %d %s", resp.StatusCode, b)
	}
	var doc identity.DIDDocument
	decode(t, b, &doc)
	ident := identity.ParseIdentity(&doc)
	pub, err := ident.PublicKey()
	if err != nil {
		t.Fatalf("did.json signing key: %v", err)
	}
	return pub, ident
}

// randomCID returns the CID of a block no repository holds.
func randomCID(t testing.TB, seed string) cid.Cid {
	t.Helper()
	c, err := cid.NewPrefixV1(cid.DagCBOR, multihash.SHA2_256).Sum([]byte("not in any repo: " + seed))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// path returns the MST key of a record URI.
func pathOf(t testing.TB, uri string) string {
	t.Helper()
	u, err := syntax.ParseATURI(uri)
	if err != nil {
		t.Fatalf("parse %q: %v", uri, err)
	}
	return u.Collection().String() + "/" + u.RecordKey().String()
}

// head returns the repository's current commit (admin token).
func head(t testing.TB, s *pdstest.Server) pdstest.CommitMeta {
	t.Helper()
	return s.LatestCommit(t)
}

// seedThings creates n records of unknownColl with applyWrites (200 per
// call) and returns their rkeys in creation order.
func seedThings(t testing.TB, s *pdstest.Server, coll string, n int) []string {
	t.Helper()
	var rkeys []string
	for done := 0; done < n; {
		batch := min(200, n-done)
		writes := make([]obj, batch)
		for i := range writes {
			writes[i] = obj{"$type": "com.atproto.repo.applyWrites#create", "collection": coll, "value": obj{"n": done + i}}
		}
		var out struct {
			Results []struct {
				URI string `json:"uri"`
			} `json:"results"`
		}
		s.Call(t, post, applyWrites, nil, obj{"repo": s.DID(), "writes": writes}, s.AdminToken(), &out)
		for _, r := range out.Results {
			u, err := syntax.ParseATURI(r.URI)
			if err != nil {
				t.Fatal(err)
			}
			rkeys = append(rkeys, u.RecordKey().String())
		}
		done += batch
	}
	return rkeys
}

func contains(s, sub string) bool { return strings.Contains(strings.ToLower(s), strings.ToLower(sub)) }
