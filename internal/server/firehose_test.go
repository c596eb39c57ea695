package server_test

import (
	"bytes"
	"context"
	"net/http"
	"testing"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	atrepo "github.com/bluesky-social/indigo/atproto/repo"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"

	"stratus/internal/pdstest"
)

// prevState is the head before a write: its rev and MST root.
type prevState struct {
	Rev  string
	data cid.Cid
}

func stateBefore(t *testing.T, s *pdstest.Server) prevState {
	t.Helper()
	snap := verifyFullRepo(t, s.DID(), s.SigningKey(), fetchRepo(t, s))
	return prevState{Rev: snap.commit.Rev, data: snap.commit.Data}
}

// lastCommitEvent decodes the newest #commit event in the event log.
func lastCommitEvent(t *testing.T, s *pdstest.Server) *comatproto.SyncSubscribeRepos_Commit {
	t.Helper()
	var ev comatproto.SyncSubscribeRepos_Commit
	if err := ev.UnmarshalCBOR(bytes.NewReader(s.LastEventPayload(t, "commit"))); err != nil {
		t.Fatalf("decode commit event: %v", err)
	}
	return &ev
}

// checkCommitEvent verifies a #commit event against the repository head
// and with indigo's inductive check (the ops, inverted on the event's
// partial tree, must give prevData).
func checkCommitEvent(t *testing.T, s *pdstest.Server, ev *comatproto.SyncSubscribeRepos_Commit, prev prevState) {
	t.Helper()
	h := head(t, s)
	if ev.Repo != s.DID() || ev.Rev != h.Rev || ev.Commit.String() != h.CID {
		t.Errorf("event repo %s rev %s commit %s, want %s %s %s", ev.Repo, ev.Rev, ev.Commit, s.DID(), h.Rev, h.CID)
	}
	if ev.Since == nil || *ev.Since != prev.Rev {
		t.Errorf("event since %v, want %s", ev.Since, prev.Rev)
	}
	if _, err := syntax.ParseDatetime(ev.Time); err != nil {
		t.Errorf("event time %q: %v", ev.Time, err)
	}
	if ev.TooBig || ev.Rebase {
		t.Errorf("tooBig/rebase set")
	}
	f := parseCAR(t, ev.Blocks)
	if f.roots[0].String() != h.CID {
		t.Errorf("event CAR root %s, want %s", f.roots[0], h.CID)
	}
	commit := f.commit(t)
	if err := commit.VerifySignature(s.SigningKey()); err != nil {
		t.Errorf("event commit signature: %v", err)
	}
	if ev.PrevData == nil || ev.PrevData.String() != prev.data.String() {
		t.Errorf("prevData %v, want the previous data root %s", ev.PrevData, prev.data)
	}
	if _, err := atrepo.VerifyCommitMessage(context.Background(), ev); err != nil {
		t.Errorf("indigo VerifyCommitMessage: %v", err)
	}
}

func TestFirehoseEvents(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t)
	tok := s.AdminToken()
	seedThings(t, s, unknownColl, 40)
	s.CreateRecord(t, unknownColl, "upd", thing(1))
	s.CreateRecord(t, unknownColl, "del", thing(2))

	t.Run("create", func(t *testing.T) {
		prev := stateBefore(t, s)
		w := s.CreateRecord(t, postColl, "", pdstest.Post("evented"))
		ev := lastCommitEvent(t, s)
		checkCommitEvent(t, s, ev, prev)
		if len(ev.Ops) != 1 || ev.Ops[0].Action != "create" || ev.Ops[0].Path != pathOf(t, w.URI) ||
			ev.Ops[0].Cid == nil || ev.Ops[0].Cid.String() != w.CID || ev.Ops[0].Prev != nil {
			t.Errorf("ops %+v", ev.Ops)
		}
	})
	t.Run("mixed batch", func(t *testing.T) {
		prev := stateBefore(t, s)
		var out applyOut
		s.Call(t, post, applyWrites, nil, obj{"repo": s.DID(), "writes": []obj{
			{"$type": awCreate, "collection": unknownColl, "rkey": "new", "value": thing(3)},
			{"$type": awUpdate, "collection": unknownColl, "rkey": "upd", "value": thing(4)},
			{"$type": awDelete, "collection": unknownColl, "rkey": "del"},
			{"$type": awCreate, "collection": unknownColl, "rkey": "gone", "value": thing(5)},
			{"$type": awDelete, "collection": unknownColl, "rkey": "gone"},
			{"$type": awCreate, "collection": unknownColl, "rkey": "twice", "value": thing(6)},
			{"$type": awUpdate, "collection": unknownColl, "rkey": "twice", "value": thing(7)},
		}}, tok, &out)
		ev := lastCommitEvent(t, s)
		checkCommitEvent(t, s, ev, prev)
		want := map[string]string{
			unknownColl + "/new":   "create",
			unknownColl + "/upd":   "update",
			unknownColl + "/del":   "delete",
			unknownColl + "/twice": "create",
		}
		got := map[string]string{}
		for _, op := range ev.Ops {
			got[op.Path] = op.Action
			switch op.Action {
			case "create":
				if op.Cid == nil || op.Prev != nil {
					t.Errorf("create op %s: cid %v prev %v", op.Path, op.Cid, op.Prev)
				}
			case "update":
				if op.Cid == nil || op.Prev == nil {
					t.Errorf("update op %s: cid %v prev %v", op.Path, op.Cid, op.Prev)
				}
			case "delete":
				if op.Cid != nil || op.Prev == nil {
					t.Errorf("delete op %s: cid %v prev %v", op.Path, op.Cid, op.Prev)
				}
			}
		}
		if len(got) != len(want) || len(ev.Ops) != len(want) {
			t.Errorf("ops %v, want %v", got, want)
		}
		for p, a := range want {
			if got[p] != a {
				t.Errorf("op for %s: %q, want %q", p, got[p], a)
			}
		}
		for _, op := range ev.Ops {
			if op.Path == unknownColl+"/twice" && (op.Cid == nil || op.Cid.String() != out.Results[6].CID) {
				t.Errorf("twice op cid %v, want the update's %s", op.Cid, out.Results[6].CID)
			}
		}
	})
	t.Run("no-op writes emit nothing", func(t *testing.T) {
		before := lastCommitEvent(t, s)
		s.Call(t, post, deleteRecord, nil, obj{"repo": s.DID(), "collection": unknownColl, "rkey": "never"}, tok, nil)
		s.Call(t, post, putRecord, nil, obj{"repo": s.DID(), "collection": unknownColl, "rkey": "new", "record": thing(3)}, tok, nil)
		if after := lastCommitEvent(t, s); after.Rev != before.Rev {
			t.Errorf("a no-op write emitted commit %s", after.Rev)
		}
	})
	t.Run("delete to empty collection", func(t *testing.T) {
		s.CreateRecord(t, "com.example.solo", "only", obj{"x": 1})
		prev := stateBefore(t, s)
		s.Call(t, post, deleteRecord, nil, obj{"repo": s.DID(), "collection": "com.example.solo", "rkey": "only"}, tok, nil)
		checkCommitEvent(t, s, lastCommitEvent(t, s), prev)
	})
	t.Run("account events", func(t *testing.T) {
		s.Call(t, post, deactivateAccount, nil, nil, tok, nil)
		var acc comatproto.SyncSubscribeRepos_Account
		if err := acc.UnmarshalCBOR(bytes.NewReader(s.LastEventPayload(t, "account"))); err != nil {
			t.Fatal(err)
		}
		if acc.Did != s.DID() || acc.Active || acc.Status == nil || *acc.Status != "deactivated" {
			t.Errorf("account event after deactivate: %+v", acc)
		}
		s.Call(t, post, activateAccount, nil, nil, tok, nil)
		if err := acc.UnmarshalCBOR(bytes.NewReader(s.LastEventPayload(t, "account"))); err != nil {
			t.Fatal(err)
		}
		if acc.Did != s.DID() || !acc.Active || acc.Status != nil {
			t.Errorf("account event after activate: %+v", acc)
		}
		var sync comatproto.SyncSubscribeRepos_Sync
		if err := sync.UnmarshalCBOR(bytes.NewReader(s.LastEventPayload(t, "sync"))); err != nil {
			t.Fatal(err)
		}
		h := head(t, s)
		if sync.Did != s.DID() || sync.Rev != h.Rev {
			t.Errorf("sync event %s %s, want %s %s", sync.Did, sync.Rev, s.DID(), h.Rev)
		}
		if f := parseCAR(t, sync.Blocks); f.roots[0].String() != h.CID || len(f.blocks) != 1 {
			t.Errorf("sync event CAR root %s with %d blocks, want only %s", f.roots[0], len(f.blocks), h.CID)
		}
		var id comatproto.SyncSubscribeRepos_Identity
		if err := id.UnmarshalCBOR(bytes.NewReader(s.LastEventPayload(t, "identity"))); err != nil {
			t.Fatal(err)
		}
		if id.Did != s.DID() || id.Handle == nil || *id.Handle != s.Handle() {
			t.Errorf("identity event %+v", id)
		}
	})
	t.Run("genesis events", func(t *testing.T) {
		fresh := pdstest.NewServer(t)
		var sync comatproto.SyncSubscribeRepos_Sync
		if err := sync.UnmarshalCBOR(bytes.NewReader(fresh.LastEventPayload(t, "sync"))); err != nil {
			t.Fatal(err)
		}
		if h := head(t, fresh); sync.Rev != h.Rev {
			t.Errorf("genesis sync rev %s, head %s", sync.Rev, h.Rev)
		}
		status, b := fresh.Do(t, get, getRepoStatus, q("did", fresh.DID()), nil, "")
		if status != http.StatusOK {
			t.Fatalf("%d %s", status, b)
		}
	})
}
