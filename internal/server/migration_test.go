package server_test

import (
	"bytes"
	"net/http"
	"strings"
	"testing"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/atdata"
	atrepo "github.com/bluesky-social/indigo/atproto/repo"
	"github.com/bluesky-social/indigo/atproto/repo/mst"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"
	car "github.com/ipld/go-car"
	carutil "github.com/ipld/go-car/util"
	"github.com/multiformats/go-multihash"

	"stratus/internal/config"
	stridentity "stratus/internal/identity"
	"stratus/internal/identity/plctest"
	"stratus/internal/pdstest"
)

// importTarget starts a deactivated server prepared for a did:plc whose
// DID document (on a stand-in directory) names key, the previous host's
// signing key, which the test holds.
func importTarget(t *testing.T, opts ...pdstest.Option) (*pdstest.Server, atcrypto.PrivateKey) {
	t.Helper()
	plc := plctest.NewServer(t)
	rot, _ := atcrypto.GeneratePrivateKeyK256()
	key, _ := atcrypto.GeneratePrivateKeyK256()
	pub, _ := key.PublicKey()
	op, err := stridentity.NewGenesis(rot, nil, pub, "alice.pds.test", "https://old.test")
	if err != nil {
		t.Fatal(err)
	}
	did, err := plc.Register(op)
	if err != nil {
		t.Fatal(err)
	}
	opts = append([]pdstest.Option{pdstest.WithHandle("alice.pds.test"), pdstest.WithInitiallyActive(false),
		pdstest.WithConfig(func(c *config.Config) { c.DID, c.PLCURL = did.String(), plc.URL() })}, opts...)
	return pdstest.NewServer(t, opts...), key
}

type block struct {
	c    cid.Cid
	data []byte
}

func cborBlock(t *testing.T, data []byte) block {
	t.Helper()
	c, err := cid.NewPrefixV1(cid.DagCBOR, multihash.SHA2_256).Sum(data)
	if err != nil {
		t.Fatal(err)
	}
	return block{c, data}
}

// signedCAR builds a repository CAR: a commit for did over the tree root
// data, signed by key, followed by blocks.
func signedCAR(t *testing.T, did string, key atcrypto.PrivateKey, data cid.Cid, blocks ...block) []byte {
	t.Helper()
	c := atrepo.Commit{DID: did, Version: 3, Data: data, Rev: syntax.NewTIDNow(0).String()}
	if err := c.Sign(key); err != nil {
		t.Fatal(err)
	}
	var cb bytes.Buffer
	if err := c.MarshalCBOR(&cb); err != nil {
		t.Fatal(err)
	}
	commit := cborBlock(t, cb.Bytes())
	var out bytes.Buffer
	if err := car.WriteHeader(&car.CarHeader{Roots: []cid.Cid{commit.c}, Version: 1}, &out); err != nil {
		t.Fatal(err)
	}
	for _, b := range append([]block{commit}, blocks...) {
		if err := carutil.LdWrite(&out, b.c.Bytes(), b.data); err != nil {
			t.Fatal(err)
		}
	}
	return out.Bytes()
}

// node encodes one MST node holding the given sorted keys, all pointing
// at value, with no children.
func node(t *testing.T, value cid.Cid, keys ...string) block {
	t.Helper()
	nd := mst.NodeData{Entries: []mst.EntryData{}}
	prev := ""
	for _, k := range keys {
		p := 0
		for p < len(prev) && p < len(k) && prev[p] == k[p] {
			p++
		}
		nd.Entries = append(nd.Entries, mst.EntryData{PrefixLen: int64(p), KeySuffix: []byte(k[p:]), Value: value})
		prev = k
	}
	data, c, err := nd.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	return block{*c, data}
}

func importCAR(t *testing.T, s *pdstest.Server, body []byte) (int, []byte) {
	t.Helper()
	resp, b := s.Raw(t, http.MethodPost, "/xrpc/com.atproto.repo.importRepo",
		http.Header{"Authorization": {"Bearer " + s.AdminToken()}, "Content-Type": {"application/vnd.ipld.car"}}, bytes.NewReader(body))
	return resp.StatusCode, b
}

// TestImportRepo imports a repository signed by the DID document's key
// and refuses every damaged or foreign one without touching the stored
// repository.
func TestImportRepo(t *testing.T) {
	t.Parallel()
	s, key := importTarget(t, pdstest.WithConfig(func(c *config.Config) { c.ImportMaxSize = 64 << 10 }))
	did := s.DID()
	rec, err := atdata.MarshalCBOR(pdstest.Post("imported"))
	if err != nil {
		t.Fatal(err)
	}
	record := cborBlock(t, rec)
	// Two record keys on different MST layers, for a non-canonical tree.
	var low, high string
	for i := 0; low == "" || high == ""; i++ {
		k := "app.bsky.feed.post/" + syntax.NewTIDFromInteger(uint64(1_700_000_000_000_000+i)).String()
		if mst.HeightForKey([]byte(k)) == 0 && low == "" {
			low = k
		} else if mst.HeightForKey([]byte(k)) > 0 && high == "" {
			high = k
		}
	}
	keys := []string{low, high}
	if high < low {
		keys = []string{high, low}
	}
	flat := node(t, record.c, keys...) // both keys in one node: wrong for the higher one
	tree := mst.NewEmptyTree()
	tree.Insert([]byte(low), record.c)
	root, err := tree.RootCID()
	if err != nil {
		t.Fatal(err)
	}
	one := node(t, record.c, low)
	if !one.c.Equals(*root) {
		t.Fatalf("hand-built node %s differs from indigo's %s", one.c, root)
	}
	good := signedCAR(t, did, key, one.c, one, record)
	other, _ := atcrypto.GeneratePrivateKeyK256()
	before := s.LatestCommit(t)

	for _, tc := range []struct {
		name   string
		body   []byte
		status int
		want   string
	}{
		{"wrong DID", signedCAR(t, "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", key, one.c, one, record), 400, "InvalidRepo"},
		{"bad signature", signedCAR(t, did, other, one.c, one, record), 400, "InvalidRepo"},
		{"truncated", good[:len(good)-10], 400, "InvalidRepo"},
		{"empty", nil, 400, "InvalidRepo"},
		{"missing record", signedCAR(t, did, key, one.c, one), 400, "InvalidRepo"},
		{"missing node", signedCAR(t, did, key, one.c, record), 400, "InvalidRepo"},
		{"non-canonical MST", signedCAR(t, did, key, flat.c, flat, record), 400, "InvalidRepo"},
		{"oversized", append(bytes.Clone(good), make([]byte, 64<<10)...), 413, "PayloadTooLarge"},
	} {
		status, body := importCAR(t, s, tc.body)
		pdstest.MustError(t, status, body, tc.status, tc.want)
	}
	if s.LatestCommit(t) != before {
		t.Fatalf("a refused import changed the repository")
	}
	resp, body := s.Raw(t, http.MethodPost, "/xrpc/com.atproto.repo.importRepo",
		http.Header{"Authorization": {"Bearer " + s.AdminToken()}, "Content-Type": {"application/json"}}, bytes.NewReader(good))
	pdstest.MustError(t, resp.StatusCode, body, 400, "InvalidRequest")

	seq := s.LastSeq(t)
	for range 2 { // importing is idempotent
		if status, body := importCAR(t, s, good); status != http.StatusOK {
			t.Fatalf("import: %d %s", status, body)
		}
	}
	var st struct {
		IndexedRecords int64 `json:"indexedRecords"`
	}
	s.Call(t, http.MethodGet, "com.atproto.server.checkAccountStatus", nil, nil, s.AdminToken(), &st)
	if st.IndexedRecords != 1 {
		t.Fatalf("records after import: %d", st.IndexedRecords)
	}
	evs := s.Events(t, seq)
	if len(evs) != 2 || evs[0].Type != "sync" || evs[1].Type != "sync" {
		t.Fatalf("import events: %+v", evs)
	}
	// Writes after activation build on the imported tree.
	s.Call(t, http.MethodPost, "com.atproto.server.activateAccount", nil, struct{}{}, s.AdminToken(), nil)
	s.CreateRecord(t, "app.bsky.feed.post", "", pdstest.Post("after"))
	s.Call(t, http.MethodGet, "com.atproto.server.checkAccountStatus", nil, nil, s.AdminToken(), &st)
	if st.IndexedRecords != 2 {
		t.Fatalf("records after a write: %d", st.IndexedRecords)
	}
	// An active account is never replaced.
	status, body := importCAR(t, s, good)
	if e := pdstest.MustError(t, status, body, 400, "InvalidRequest"); !strings.Contains(e.Message, "deactivated") {
		t.Fatalf("active import: %s", e.Message)
	}
}

// TestCreateAccountRefusals: createAccount only claims the prepared
// account, with a service token from the DID's current key.
func TestCreateAccountRefusals(t *testing.T) {
	t.Parallel()
	s, _ := importTarget(t)
	status, body := s.Do(t, http.MethodPost, "com.atproto.server.createAccount", nil, map[string]any{"handle": "bob.pds.test", "password": "whatever-password"}, "")
	pdstest.MustError(t, status, body, 400, "InvalidRequest")
	status, body = s.Do(t, http.MethodPost, "com.atproto.server.createAccount", nil, map[string]any{"did": s.DID(), "handle": "alice.pds.test"}, "")
	pdstest.MustError(t, status, body, 401, "AuthenticationRequired")
	// A token signed by this server's own key (a session here) is not
	// the previous host's.
	sess := s.Login(t, s.DID(), pdstest.Password)
	var tok struct {
		Token string `json:"token"`
	}
	s.Call(t, http.MethodGet, "com.atproto.server.getServiceAuth", map[string][]string{"aud": {"did:web:pds.test"}, "lxm": {"com.atproto.server.createAccount"}}, nil, sess.AccessJWT, &tok)
	status, body = s.Do(t, http.MethodPost, "com.atproto.server.createAccount", nil, map[string]any{"did": s.DID()}, tok.Token)
	if status != http.StatusUnauthorized {
		t.Fatalf("createAccount with a token of this server's key: %d %s", status, body)
	}
}
