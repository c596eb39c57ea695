package server_test

import (
	"maps"
	"net/http"
	"slices"
	"testing"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"stratus/internal/pdstest"
)

func TestRestartPersistence(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t)
	tok := s.AdminToken()
	const coll = "com.example.durable"
	rkeys := seedThings(t, s, coll, 120)
	s.CreateRecord(t, postColl, "", pdstest.Post("before restart"))
	s.CreateRecord(t, profileColl, "self", obj{"displayName": "Alice"})
	// Deletes, updates and shared contents, so that the tree rebuilt from
	// storage is not just the insertion history.
	for _, rk := range rkeys[:30] {
		s.Call(t, post, deleteRecord, nil, obj{"repo": s.DID(), "collection": coll, "rkey": rk}, tok, nil)
	}
	for _, rk := range rkeys[30:40] {
		s.Call(t, post, putRecord, nil, obj{"repo": s.DID(), "collection": coll, "rkey": rk, "record": obj{"same": true}}, tok, nil)
	}

	before := head(t, s)
	beforeRecords := listAll(t, s, coll, 100, false)
	beforeSnap := verifyFullRepo(t, s.DID(), s.SigningKey(), fetchRepo(t, s))
	oldURL := s.URL()

	s.Restart(t)
	if s.URL() == "" {
		t.Fatalf("no URL after restart")
	}
	t.Logf("restarted: %s -> %s", oldURL, s.URL())

	t.Run("same head", func(t *testing.T) {
		if after := head(t, s); after != before {
			t.Errorf("head %+v after restart, want %+v", after, before)
		}
	})
	t.Run("same records", func(t *testing.T) {
		after := listAll(t, s, coll, 100, false)
		if len(after) != len(beforeRecords) {
			t.Fatalf("%d records after restart, want %d", len(after), len(beforeRecords))
		}
		for i := range after {
			if after[i].URI != beforeRecords[i].URI || after[i].CID != beforeRecords[i].CID {
				t.Errorf("record %d: %s %s, want %s %s", i, after[i].URI, after[i].CID, beforeRecords[i].URI, beforeRecords[i].CID)
			}
		}
		snap := verifyFullRepo(t, s.DID(), s.SigningKey(), fetchRepo(t, s))
		if snap.commitCID != beforeSnap.commitCID || !maps.Equal(snap.records, beforeSnap.records) {
			t.Errorf("exported repository differs after restart")
		}
	})
	t.Run("status and identity", func(t *testing.T) {
		var st repoStatus
		s.Call(t, get, getRepoStatus, q("did", s.DID()), nil, "", &st)
		if !st.Active || st.Rev == nil || *st.Rev != before.Rev {
			t.Errorf("getRepoStatus %+v", st)
		}
		pub, _ := didDocKey(t, s)
		if pub.DIDKey() != s.SigningKey().DIDKey() {
			t.Errorf("signing key changed across restart")
		}
	})
	t.Run("writes continue", func(t *testing.T) {
		// swapCommit against the pre-restart head: the reloaded state is
		// exactly the stored one.
		st, b := s.Do(t, post, createRecord, nil, obj{"repo": s.DID(), "collection": coll, "record": obj{"after": 1}, "swapCommit": before.CID}, tok)
		if st != http.StatusOK {
			t.Fatalf("write after restart: %d %s", st, b)
		}
		var w writeOut
		decode(t, b, &w)
		if w.Commit == nil || w.Commit.Rev <= before.Rev {
			t.Fatalf("rev after restart %v, want > %s", w.Commit, before.Rev)
		}
		if _, err := syntax.ParseTID(w.Commit.Rev); err != nil {
			t.Errorf("rev %q: %v", w.Commit.Rev, err)
		}
		// Auto rkeys keep increasing too.
		if last := slices.Max(rkeys); w.RKey() <= last {
			t.Errorf("new rkey %s not after %s", w.RKey(), last)
		}
		s.Call(t, post, deleteRecord, nil, obj{"repo": s.DID(), "collection": coll, "rkey": rkeys[50]}, tok, nil)
		snap := verifyFullRepo(t, s.DID(), s.SigningKey(), fetchRepo(t, s))
		if want := len(beforeSnap.records); len(snap.records) != want {
			t.Errorf("%d records, want %d", len(snap.records), want)
		}
	})
	t.Run("second restart", func(t *testing.T) {
		h := head(t, s)
		s.Restart(t)
		if after := head(t, s); after != h {
			t.Errorf("head %+v after second restart, want %+v", after, h)
		}
		w := s.CreateRecord(t, coll, "", obj{"again": 1})
		if w.Commit.Rev <= h.Rev {
			t.Errorf("rev %s not after %s", w.Commit.Rev, h.Rev)
		}
	})
}
