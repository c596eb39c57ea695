package server_test

import (
	"net/http"
	"testing"

	"stratus/internal/pdstest"
)

type repoStatus struct {
	DID    string  `json:"did"`
	Active bool    `json:"active"`
	Status *string `json:"status"`
	Rev    *string `json:"rev"`
}

type accountStatus struct {
	Activated          *bool  `json:"activated"`
	ValidDID           *bool  `json:"validDid"`
	RepoCommit         string `json:"repoCommit"`
	RepoRev            string `json:"repoRev"`
	RepoBlocks         *int64 `json:"repoBlocks"`
	IndexedRecords     *int64 `json:"indexedRecords"`
	PrivateStateValues *int64 `json:"privateStateValues"`
	ExpectedBlobs      *int64 `json:"expectedBlobs"`
	ImportedBlobs      *int64 `json:"importedBlobs"`
}

func TestAccountDeactivation(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t)
	tok := s.AdminToken()
	w := s.CreateRecord(t, unknownColl, "kept", thing(1))

	status := func(t *testing.T) repoStatus {
		t.Helper()
		var st repoStatus
		s.Call(t, get, getRepoStatus, q("did", s.DID()), nil, "", &st)
		return st
	}
	createStatus := func(t *testing.T) (int, []byte) {
		t.Helper()
		return s.Do(t, post, createRecord, nil, obj{"repo": s.DID(), "collection": unknownColl, "record": thing(2)}, tok)
	}

	t.Run("deactivate", func(t *testing.T) {
		for i := 0; i < 2; i++ { // idempotent
			st, b := s.Do(t, post, deactivateAccount, nil, nil, tok)
			if st != http.StatusOK {
				t.Fatalf("deactivate #%d: %d %s", i+1, st, b)
			}
		}
		got := status(t)
		if got.Active || got.Status == nil || *got.Status != "deactivated" || got.Rev != nil {
			t.Errorf("getRepoStatus = %+v, want inactive, deactivated, no rev", got)
		}
	})
	t.Run("deactivate with deleteAfter", func(t *testing.T) {
		s.Call(t, post, deactivateAccount, nil, obj{"deleteAfter": "2030-01-01T00:00:00Z"}, tok, nil)
	})
	t.Run("writes refused", func(t *testing.T) {
		before := head(t, s)
		for _, tc := range []struct {
			nsid string
			body obj
		}{
			{createRecord, obj{"repo": s.DID(), "collection": unknownColl, "record": thing(2)}},
			{putRecord, obj{"repo": s.DID(), "collection": unknownColl, "rkey": "kept", "record": thing(3)}},
			{deleteRecord, obj{"repo": s.DID(), "collection": unknownColl, "rkey": "kept"}},
			{applyWrites, obj{"repo": s.DID(), "writes": []obj{{"$type": awCreate, "collection": unknownColl, "value": thing(4)}}}},
		} {
			t.Run(tc.nsid, func(t *testing.T) {
				st, b := s.Do(t, post, tc.nsid, nil, tc.body, tok)
				pdstest.MustError(t, st, b, http.StatusForbidden, "AccountDeactivated")
			})
		}
		if head(t, s) != before {
			t.Errorf("head moved while deactivated")
		}
	})
	t.Run("reads still work", func(t *testing.T) {
		var rec record
		s.Call(t, get, getRecord, q("repo", s.DID(), "collection", unknownColl, "rkey", "kept"), nil, "", &rec)
		if rec.CID != w.CID {
			t.Errorf("getRecord cid %s, want %s", rec.CID, w.CID)
		}
		var page listPage
		s.Call(t, get, listRecords, q("repo", s.DID(), "collection", unknownColl), nil, "", &page)
		if len(page.Records) != 1 {
			t.Errorf("listRecords: %d records", len(page.Records))
		}
		s.Call(t, get, describeRepo, q("repo", s.DID()), nil, "", nil)
	})
	t.Run("sync refused to the public", func(t *testing.T) {
		for _, tc := range []struct {
			nsid  string
			query map[string][]string
		}{
			{getLatestCommit, q("did", s.DID())},
			{getRepo, q("did", s.DID())},
			{getBlocks, q("did", s.DID(), "cids", w.CID)},
			{syncGetRecord, q("did", s.DID(), "collection", unknownColl, "rkey", "kept")},
		} {
			t.Run(tc.nsid, func(t *testing.T) {
				st, b := s.Do(t, get, tc.nsid, tc.query, nil, "")
				pdstest.MustError(t, st, b, http.StatusBadRequest, "RepoDeactivated")
				st, b = s.Do(t, get, tc.nsid, tc.query, nil, "wrong-token")
				pdstest.MustError(t, st, b, http.StatusBadRequest, "RepoDeactivated")
				// The operator still gets it.
				st, b = s.Do(t, get, tc.nsid, tc.query, nil, tok)
				if st != http.StatusOK {
					t.Errorf("with the admin token: %d %s", st, truncate(b))
				}
			})
		}
		var c pdstest.CommitMeta
		s.Call(t, get, getLatestCommit, q("did", s.DID()), nil, tok, &c)
		if c != *w.Commit {
			t.Errorf("admin getLatestCommit %+v, want %+v", c, *w.Commit)
		}
	})
	t.Run("listRepos shows the status", func(t *testing.T) {
		var out struct {
			Repos []struct {
				Active bool   `json:"active"`
				Status string `json:"status"`
			} `json:"repos"`
		}
		s.Call(t, get, listRepos, nil, nil, "", &out)
		if len(out.Repos) != 1 || out.Repos[0].Active || out.Repos[0].Status != "deactivated" {
			t.Errorf("listRepos = %+v", out)
		}
	})
	t.Run("checkAccountStatus while deactivated", func(t *testing.T) {
		var st accountStatus
		s.Call(t, get, checkAccountStatus, nil, nil, tok, &st)
		if st.Activated == nil || *st.Activated {
			t.Errorf("activated = %v, want false", st.Activated)
		}
	})
	t.Run("activate", func(t *testing.T) {
		for i := 0; i < 2; i++ { // idempotent
			st, b := s.Do(t, post, activateAccount, nil, nil, tok)
			if st != http.StatusOK {
				t.Fatalf("activate #%d: %d %s", i+1, st, b)
			}
		}
		got := status(t)
		if !got.Active || got.Status != nil || got.Rev == nil || *got.Rev != w.Commit.Rev {
			t.Errorf("getRepoStatus = %+v, want active with rev %s", got, w.Commit.Rev)
		}
		st, b := createStatus(t)
		if st != http.StatusOK {
			t.Errorf("write after activate: %d %s", st, b)
		}
		s.Call(t, get, getLatestCommit, q("did", s.DID()), nil, "", nil)
	})
	t.Run("cycle quickly", func(t *testing.T) {
		// The write pre-check may cache the account briefly; a status
		// change made here must still take effect at once.
		for i := 0; i < 3; i++ {
			s.Call(t, post, deactivateAccount, nil, nil, tok, nil)
			st, b := createStatus(t)
			pdstest.MustError(t, st, b, http.StatusForbidden, "AccountDeactivated")
			s.Call(t, post, activateAccount, nil, nil, tok, nil)
			if st, b := createStatus(t); st != http.StatusOK {
				t.Fatalf("cycle %d: write after activate: %d %s", i, st, b)
			}
		}
	})
	verifyFullRepo(t, s.DID(), s.SigningKey(), fetchRepo(t, s))
}

func TestCheckAccountStatus(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t)
	tok := s.AdminToken()
	seedThings(t, s, unknownColl, 12)
	s.CreateRecord(t, postColl, "", pdstest.Post("x"))
	h := head(t, s)

	var st accountStatus
	status, b := s.Do(t, get, checkAccountStatus, nil, nil, tok)
	if status != http.StatusOK {
		t.Fatalf("status %d: %s", status, b)
	}
	decode(t, b, &st)
	for name, v := range map[string]any{
		"activated": st.Activated, "validDid": st.ValidDID, "repoBlocks": st.RepoBlocks,
		"indexedRecords": st.IndexedRecords, "privateStateValues": st.PrivateStateValues,
		"expectedBlobs": st.ExpectedBlobs, "importedBlobs": st.ImportedBlobs,
	} {
		switch p := v.(type) {
		case *bool:
			if p == nil {
				t.Errorf("%s missing", name)
			}
		case *int64:
			if p == nil {
				t.Errorf("%s missing", name)
			}
		}
	}
	if st.Activated == nil || !*st.Activated || st.ValidDID == nil || !*st.ValidDID {
		t.Errorf("activated/validDid = %v/%v", st.Activated, st.ValidDID)
	}
	if st.RepoCommit != h.CID || st.RepoRev != h.Rev {
		t.Errorf("repoCommit/repoRev = %s/%s, want %s/%s", st.RepoCommit, st.RepoRev, h.CID, h.Rev)
	}
	if st.IndexedRecords == nil || *st.IndexedRecords != 13 {
		t.Errorf("indexedRecords = %v, want 13", st.IndexedRecords)
	}
	snap := verifyFullRepo(t, s.DID(), s.SigningKey(), fetchRepo(t, s))
	if st.RepoBlocks == nil || *st.RepoBlocks != int64(snap.blocks) {
		t.Errorf("repoBlocks = %v, the repository has %d blocks", st.RepoBlocks, snap.blocks)
	}

	t.Run("auth", func(t *testing.T) {
		status, b := s.Do(t, get, checkAccountStatus, nil, nil, "")
		pdstest.MustError(t, status, b, http.StatusUnauthorized, "AuthMissing")
		status, b = s.Do(t, get, checkAccountStatus, nil, nil, "wrong")
		pdstest.MustError(t, status, b, http.StatusUnauthorized, "InvalidToken")
	})
}

func TestInitiallyInactive(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t, pdstest.WithInitiallyActive(false))
	tok := s.AdminToken()

	var st repoStatus
	s.Call(t, get, getRepoStatus, q("did", s.DID()), nil, "", &st)
	if st.Active || st.Status == nil || *st.Status != "deactivated" {
		t.Fatalf("getRepoStatus = %+v, want deactivated", st)
	}
	status, b := s.Do(t, post, createRecord, nil, obj{"repo": s.DID(), "collection": unknownColl, "record": thing(1)}, tok)
	pdstest.MustError(t, status, b, http.StatusForbidden, "AccountDeactivated")
	status, b = s.Do(t, get, getLatestCommit, q("did", s.DID()), nil, "")
	pdstest.MustError(t, status, b, http.StatusBadRequest, "RepoDeactivated")

	s.Call(t, post, activateAccount, nil, nil, tok, nil)
	s.CreateRecord(t, unknownColl, "", thing(1))
	s.Call(t, get, getRepoStatus, q("did", s.DID()), nil, "", &st)
	if !st.Active {
		t.Errorf("not active after activateAccount")
	}
	// A restart keeps the account active: InitiallyActive applies only to
	// the first start.
	s.Restart(t)
	s.Call(t, get, getRepoStatus, q("did", s.DID()), nil, "", &st)
	if !st.Active {
		t.Errorf("restart reapplied initially-active=false")
	}
}
