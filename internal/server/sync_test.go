package server_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/bluesky-social/indigo/atproto/repo/mst"
	"github.com/ipfs/go-cid"

	"stratus/internal/pdstest"
)

func TestSyncGetRepo(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t)
	pub, _ := didDocKey(t, s)

	t.Run("genesis", func(t *testing.T) {
		snap := verifyFullRepo(t, s.DID(), pub, fetchRepo(t, s))
		if len(snap.records) != 0 {
			t.Errorf("%d records in a new repository", len(snap.records))
		}
	})

	const coll = "com.example.synced"
	rkeys := seedThings(t, s, coll, 150)
	s.CreateRecord(t, postColl, "", pdstest.Post("one"))
	s.CreateRecord(t, profileColl, "self", obj{"displayName": "Alice"})
	// Updates and deletes leave nothing stale behind.
	for _, rk := range rkeys[:20] {
		s.Call(t, post, deleteRecord, nil, obj{"repo": s.DID(), "collection": coll, "rkey": rk}, s.AdminToken(), nil)
	}
	for i, rk := range rkeys[20:30] {
		s.Call(t, post, putRecord, nil, obj{"repo": s.DID(), "collection": coll, "rkey": rk, "record": obj{"n": 1000 + i}}, s.AdminToken(), nil)
	}
	// Two records with identical contents share one block.
	s.CreateRecord(t, unknownColl, "same-1", obj{"same": true})
	s.CreateRecord(t, unknownColl, "same-2", obj{"same": true})
	s.Call(t, post, deleteRecord, nil, obj{"repo": s.DID(), "collection": unknownColl, "rkey": "same-1"}, s.AdminToken(), nil)
	wantRecords := 150 - 20 + 2 + 1

	var full repoSnapshot
	t.Run("full export", func(t *testing.T) {
		resp, b := s.Raw(t, get, "/xrpc/"+getRepo+"?did="+s.DID(), nil, nil)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d: %s", resp.StatusCode, truncate(b))
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/vnd.ipld.car" {
			t.Errorf("Content-Type = %q", ct)
		}
		full = verifyFullRepo(t, s.DID(), pub, b)
		h := head(t, s)
		if full.commitCID.String() != h.CID || full.commit.Rev != h.Rev {
			t.Errorf("CAR root %s rev %s, getLatestCommit %s %s", full.commitCID, full.commit.Rev, h.CID, h.Rev)
		}
		if len(full.records) != wantRecords {
			t.Errorf("%d records in the MST, want %d", len(full.records), wantRecords)
		}
		// The MST agrees with the record index.
		listed := 0
		for _, c := range []string{coll, postColl, profileColl, unknownColl} {
			for _, r := range listAll(t, s, c, 100, false) {
				listed++
				p := pathOf(t, r.URI)
				if got, ok := full.records[p]; !ok || got.String() != r.CID {
					t.Errorf("listRecords %s %s, MST has %s", p, r.CID, got)
				}
			}
		}
		if listed != len(full.records) {
			t.Errorf("listRecords shows %d records, MST holds %d", listed, len(full.records))
		}
	})

	t.Run("checkAccountStatus counts", func(t *testing.T) {
		var st struct {
			RepoBlocks     int64 `json:"repoBlocks"`
			IndexedRecords int64 `json:"indexedRecords"`
		}
		s.Call(t, get, checkAccountStatus, nil, nil, s.AdminToken(), &st)
		if st.RepoBlocks != int64(full.blocks) {
			t.Errorf("repoBlocks %d, CAR holds %d blocks", st.RepoBlocks, full.blocks)
		}
		if st.IndexedRecords != int64(wantRecords) {
			t.Errorf("indexedRecords %d, want %d", st.IndexedRecords, wantRecords)
		}
	})

	t.Run("since", func(t *testing.T) {
		mid := head(t, s)
		w := s.CreateRecord(t, unknownColl, "after-since", thing(1))
		u := s.CreateRecord(t, unknownColl, "", thing(2))
		status, b := s.Do(t, get, getRepo, q("did", s.DID(), "since", mid.Rev), nil, "")
		if status != http.StatusOK {
			t.Fatalf("status %d: %s", status, truncate(b))
		}
		f := parseCAR(t, b)
		fullCAR := parseCAR(t, fetchRepo(t, s))
		if f.roots[0].String() != u.Commit.CID {
			t.Errorf("root %s, want %s", f.roots[0], u.Commit.CID)
		}
		commit := f.commit(t)
		if err := commit.VerifySignature(pub); err != nil {
			t.Errorf("signature: %v", err)
		}
		if len(f.blocks) >= len(fullCAR.blocks) {
			t.Errorf("since export has %d blocks, full export %d", len(f.blocks), len(fullCAR.blocks))
		}
		for c := range f.blocks {
			if _, ok := fullCAR.blocks[c]; !ok {
				t.Errorf("since export holds %s, which the full export does not", c)
			}
		}
		// The records written after since are there; older ones are not.
		newRecords := map[string]bool{w.CID: true, u.CID: true}
		for _, c := range []string{w.CID, u.CID} {
			rc, _ := cid.Decode(c)
			if _, ok := f.blocks[rc]; !ok {
				t.Errorf("record %s written after since missing", c)
			}
		}
		for _, rc := range full.records {
			if _, ok := f.blocks[rc]; ok && !newRecords[rc.String()] {
				t.Errorf("record %s written before since included", rc)
			}
		}
		// The export still proves its contents: the commit's MST root is
		// there (this server sends every node, a superset of the diff).
		if _, ok := f.blocks[commit.Data]; !ok {
			t.Errorf("MST root missing from the since export")
		}
		// Since the current rev: no record blocks at all.
		status, b = s.Do(t, get, getRepo, q("did", s.DID(), "since", u.Commit.Rev), nil, "")
		if status != http.StatusOK {
			t.Fatalf("status %d", status)
		}
		g := parseCAR(t, b)
		isRecord := recordCIDs(verifyFullRepo(t, s.DID(), pub, fetchRepo(t, s)))
		for c := range g.blocks {
			if isRecord[c] {
				t.Errorf("since=head export holds record block %s", c)
			}
		}
	})

	t.Run("errors", func(t *testing.T) {
		for _, tc := range []struct {
			name  string
			query string
			err   string
		}{
			{"missing did", "", "InvalidRequest"},
			{"bad did", "did=nope", "InvalidRequest"},
			{"bad since", "did=" + s.DID() + "&since=yesterday", "InvalidRequest"},
			{"unknown repo", "did=did:web:elsewhere.test", "RepoNotFound"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				resp, b := s.Raw(t, get, "/xrpc/"+getRepo+"?"+tc.query, nil, nil)
				if resp.StatusCode < 400 || resp.StatusCode >= 500 {
					t.Fatalf("status %d", resp.StatusCode)
				}
				pdstest.MustError(t, resp.StatusCode, b, resp.StatusCode, tc.err)
			})
		}
	})
}

func TestSyncMetadata(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t)
	w := s.CreateRecord(t, unknownColl, "", thing(1))

	t.Run("getLatestCommit", func(t *testing.T) {
		var c pdstest.CommitMeta
		s.Call(t, get, getLatestCommit, q("did", s.DID()), nil, "", &c)
		if c != *w.Commit {
			t.Errorf("got %+v, want %+v", c, *w.Commit)
		}
		status, b := s.Do(t, get, getLatestCommit, q("did", "did:web:elsewhere.test"), nil, "")
		if status < 400 || status >= 500 {
			t.Fatalf("status %d", status)
		}
		pdstest.MustError(t, status, b, status, "RepoNotFound")
	})
	t.Run("getRepoStatus", func(t *testing.T) {
		var st struct {
			DID    string  `json:"did"`
			Active bool    `json:"active"`
			Status *string `json:"status"`
			Rev    string  `json:"rev"`
		}
		s.Call(t, get, getRepoStatus, q("did", s.DID()), nil, "", &st)
		if st.DID != s.DID() || !st.Active || st.Status != nil || st.Rev != w.Commit.Rev {
			t.Errorf("got %+v", st)
		}
		status, b := s.Do(t, get, getRepoStatus, q("did", "did:web:elsewhere.test"), nil, "")
		if status < 400 || status >= 500 {
			t.Fatalf("status %d", status)
		}
		pdstest.MustError(t, status, b, status, "RepoNotFound")
	})
	t.Run("listRepos", func(t *testing.T) {
		var out struct {
			Cursor string `json:"cursor"`
			Repos  []struct {
				DID    string  `json:"did"`
				Head   string  `json:"head"`
				Rev    string  `json:"rev"`
				Active bool    `json:"active"`
				Status *string `json:"status"`
			} `json:"repos"`
		}
		s.Call(t, get, listRepos, nil, nil, "", &out)
		if len(out.Repos) != 1 || out.Cursor != "" {
			t.Fatalf("got %+v", out)
		}
		r := out.Repos[0]
		if r.DID != s.DID() || r.Head != w.Commit.CID || r.Rev != w.Commit.Rev || !r.Active || r.Status != nil {
			t.Errorf("got %+v", r)
		}
		s.Call(t, get, listRepos, q("limit", "1"), nil, "", &out)
		if len(out.Repos) != 1 {
			t.Errorf("limit 1: %+v", out)
		}
		s.Call(t, get, listRepos, q("cursor", s.DID()), nil, "", &out)
		if len(out.Repos) != 0 {
			t.Errorf("after the last DID: %+v", out)
		}
		for _, bad := range []string{"0", "1001", "x"} {
			status, b := s.Do(t, get, listRepos, q("limit", bad), nil, "")
			pdstest.MustError(t, status, b, http.StatusBadRequest, "InvalidRequest")
		}
	})
	t.Run("getBlocks", func(t *testing.T) {
		recCID, _ := cid.Decode(w.CID)
		commitCID, _ := cid.Decode(w.Commit.CID)
		status, b := s.Do(t, get, getBlocks, q("did", s.DID(), "cids", w.CID, "cids", w.Commit.CID), nil, "")
		if status != http.StatusOK {
			t.Fatalf("status %d: %s", status, b)
		}
		f := parseCAR(t, b)
		if len(f.blocks) != 2 {
			t.Errorf("%d blocks, want 2", len(f.blocks))
		}
		for _, c := range []cid.Cid{recCID, commitCID} {
			if _, ok := f.blocks[c]; !ok {
				t.Errorf("block %s missing", c)
			}
		}
		// MST nodes are served too.
		snap := verifyFullRepo(t, s.DID(), s.SigningKey(), fetchRepo(t, s))
		status, b = s.Do(t, get, getBlocks, q("did", s.DID(), "cids", snap.commit.Data.String()), nil, "")
		if status != http.StatusOK {
			t.Fatalf("MST root: status %d: %s", status, b)
		}
		if f := parseCAR(t, b); len(f.blocks) != 1 || f.blocks[snap.commit.Data] == nil {
			t.Errorf("MST root block not returned")
		}
		missing := randomCID(t, "getBlocks")
		for _, tc := range []struct {
			name string
			v    map[string][]string
			err  string
		}{
			{"missing cid", map[string][]string{"did": {s.DID()}, "cids": {w.CID, missing.String()}}, ""},
			{"bad cid", map[string][]string{"did": {s.DID()}, "cids": {"nope"}}, "InvalidRequest"},
			{"no cids", map[string][]string{"did": {s.DID()}}, "InvalidRequest"},
			{"unknown repo", map[string][]string{"did": {"did:web:elsewhere.test"}, "cids": {w.CID}}, "RepoNotFound"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				status, b := s.Do(t, get, getBlocks, tc.v, nil, "")
				if tc.err == "RepoNotFound" {
					pdstest.MustError(t, status, b, status, tc.err)
					return
				}
				env := pdstest.MustError(t, status, b, http.StatusBadRequest, tc.err)
				if tc.name == "missing cid" && !strings.Contains(env.Message, missing.String()) {
					t.Errorf("message %q does not name the missing cid", env.Message)
				}
			})
		}
	})
}

// TestSyncGetRecordProofs checks com.atproto.sync.getRecord proofs for every
// record of a multi-level tree and for absent keys around them.
func TestSyncGetRecordProofs(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t)
	pub, _ := didDocKey(t, s)
	const coll = "com.example.proved"
	rkeys := seedThings(t, s, coll, 230)
	s.CreateRecord(t, "com.example.aaa", "first", obj{"x": 1})
	s.CreateRecord(t, "com.example.zzz", "last", obj{"x": 1})
	full := verifyFullRepo(t, s.DID(), pub, fetchRepo(t, s))

	prove := func(t *testing.T, coll, rkey string) (*mst.Tree, carFile) {
		t.Helper()
		status, b := s.Do(t, get, syncGetRecord, q("did", s.DID(), "collection", coll, "rkey", rkey), nil, "")
		if status != http.StatusOK {
			t.Fatalf("status %d: %s", status, truncate(b))
		}
		f := parseCAR(t, b)
		if f.roots[0] != full.commitCID {
			t.Fatalf("proof root %s, want head %s", f.roots[0], full.commitCID)
		}
		commit := f.commit(t)
		if err := commit.VerifySignature(pub); err != nil {
			t.Fatalf("proof commit signature: %v", err)
		}
		tree, err := mst.LoadTreeFromStore(context.Background(), f.store(t), commit.Data)
		if err != nil {
			t.Fatalf("load proof tree: %v", err)
		}
		if len(f.blocks) >= full.blocks {
			t.Errorf("proof holds %d blocks, the whole repo %d", len(f.blocks), full.blocks)
		}
		return tree, f
	}

	t.Run("presence", func(t *testing.T) {
		for _, rk := range rkeys {
			path := coll + "/" + rk
			tree, f := prove(t, coll, rk)
			got, err := tree.Get([]byte(path))
			if err != nil {
				t.Fatalf("%s: tree.Get on the proof: %v", path, err)
			}
			want := full.records[path]
			if got == nil || !got.Equals(want) {
				t.Fatalf("%s: proof gives %v, want %s", path, got, want)
			}
			if _, ok := f.blocks[want]; !ok {
				t.Errorf("%s: record block missing from the proof", path)
			}
		}
	})
	t.Run("absence", func(t *testing.T) {
		absent := [][2]string{
			{"com.example.aaa", "0"},     // before every key
			{"com.example.zzzz", "zzz"},  // after every key
			{"com.example.aaa", "firsu"}, // next to an existing key
			{coll, "0"},
			{coll, "zzzzzzzzzzzzz"},
		}
		for i := 0; i+1 < len(rkeys); i += 23 {
			// Between two neighbouring keys.
			absent = append(absent, [2]string{coll, rkeys[i] + "0"})
		}
		isRecord := recordCIDs(full)
		for _, a := range absent {
			path := a[0] + "/" + a[1]
			if _, ok := full.records[path]; ok {
				t.Fatalf("%s unexpectedly exists", path)
			}
			tree, f := prove(t, a[0], a[1])
			got, err := tree.Get([]byte(path))
			if err != nil {
				t.Errorf("%s: proof of absence is incomplete: %v", path, err)
				continue
			}
			if got != nil {
				t.Errorf("%s: proof claims %s", path, got)
			}
			for c := range f.blocks {
				if isRecord[c] {
					t.Errorf("%s: proof of absence carries record block %s", path, c)
				}
			}
		}
	})
	t.Run("errors", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			v    map[string][]string
		}{
			{"bad rkey", map[string][]string{"did": {s.DID()}, "collection": {coll}, "rkey": {".."}}},
			{"bad collection", map[string][]string{"did": {s.DID()}, "collection": {"x"}, "rkey": {"a"}}},
			{"no did", map[string][]string{"collection": {coll}, "rkey": {"a"}}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				status, b := s.Do(t, get, syncGetRecord, tc.v, nil, "")
				pdstest.MustError(t, status, b, http.StatusBadRequest, "InvalidRequest")
			})
		}
	})
}

// recordCIDs returns the set of record CIDs of a snapshot.
func recordCIDs(r repoSnapshot) map[cid.Cid]bool {
	m := map[cid.Cid]bool{}
	for _, c := range r.records {
		m[c] = true
	}
	return m
}
