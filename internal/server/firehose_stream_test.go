package server_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/atdata"
	"github.com/bluesky-social/indigo/atproto/identity"
	atrepo "github.com/bluesky-social/indigo/atproto/repo"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/coder/websocket"
	"github.com/ipfs/go-cid"

	"stratus/internal/config"
	"stratus/internal/pdstest"
	"stratus/internal/sequencer"
)

// didDirectory returns a mock identity directory holding the account of s
// as its /.well-known/did.json describes it.
func didDirectory(t *testing.T, s *pdstest.Server) identity.Directory {
	t.Helper()
	resp, b := s.Raw(t, get, "/.well-known/did.json", nil, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("did.json: %d %s", resp.StatusCode, b)
	}
	var doc identity.DIDDocument
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("did.json: %v", err)
	}
	if doc.DID.String() != s.DID() {
		t.Fatalf("did.json names %s, want %s", doc.DID, s.DID())
	}
	ident := identity.ParseIdentity(&doc)
	key, err := ident.PublicKey()
	if err != nil {
		t.Fatalf("did.json key: %v", err)
	}
	if key.DIDKey() != s.SigningKey().DIDKey() {
		t.Fatalf("did.json key %s, want %s", key.DIDKey(), s.SigningKey().DIDKey())
	}
	dir := identity.NewMockDirectory()
	dir.Insert(ident)
	return dir
}

// commitChain checks that successive #commit frames form a chain from a
// starting commit: each verifies with indigo (inductively, against the
// previous data root, and by signature through the DID document), names
// the previous rev in since and the previous data root in prevData.
type commitChain struct {
	t        *testing.T
	ctx      context.Context
	dir      identity.Directory
	did      string
	seq      int64
	prevRev  string
	prevData cid.Cid
}

// next reads the next frame, checks it is the commit a write answered
// with (meta), and returns its ops by path.
func (ch *commitChain) next(c *websocket.Conn, meta *pdstest.CommitMeta) map[string]*comatproto.SyncSubscribeRepos_RepoOp {
	t := ch.t
	t.Helper()
	f := readFrame(t, ch.ctx, c)
	ev := f.commit(t)
	ch.seq++
	if ev.Seq != ch.seq {
		t.Errorf("commit seq %d, want %d", ev.Seq, ch.seq)
	}
	if meta == nil {
		t.Fatalf("write answered without a commit")
	}
	if ev.Repo != ch.did || ev.Rev != meta.Rev || ev.Commit.String() != meta.CID {
		t.Errorf("commit %s %s %s, want %s %s %s", ev.Repo, ev.Rev, ev.Commit, ch.did, meta.Rev, meta.CID)
	}
	if ev.Since == nil || *ev.Since != ch.prevRev {
		t.Errorf("since %v, want the previous rev %s", ev.Since, ch.prevRev)
	}
	if ev.PrevData == nil || cid.Cid(*ev.PrevData) != ch.prevData {
		t.Errorf("prevData %v, want the previous data root %s", ev.PrevData, ch.prevData)
	}
	if ev.TooBig || ev.Rebase {
		t.Errorf("tooBig %v rebase %v", ev.TooBig, ev.Rebase)
	}
	at, err := syntax.ParseDatetime(ev.Time)
	if err != nil {
		t.Errorf("time %q: %v", ev.Time, err)
	} else if d := time.Since(at.Time()); d < -time.Minute || d > time.Minute {
		t.Errorf("time %s is %v away from now", ev.Time, d)
	}
	// On the wire: blobs is present and an empty array; every required
	// field is there.
	m, err := atdata.UnmarshalCBOR(f.Body)
	if err != nil {
		t.Fatalf("decode commit body generically: %v", err)
	}
	if b, ok := m["blobs"].([]any); !ok || len(b) != 0 {
		t.Errorf("blobs = %#v, want an empty array", m["blobs"])
	}
	for _, k := range []string{"seq", "rebase", "tooBig", "repo", "commit", "rev", "since", "blocks", "ops", "time", "prevData"} {
		if _, ok := m[k]; !ok {
			t.Errorf("commit body has no %q", k)
		}
	}
	if _, err := atrepo.VerifyCommitMessage(ch.ctx, ev); err != nil {
		t.Errorf("indigo VerifyCommitMessage (seq %d): %v", ev.Seq, err)
	}
	if err := atrepo.VerifyCommitSignature(ch.ctx, ch.dir, ev); err != nil {
		t.Errorf("indigo VerifyCommitSignature (seq %d): %v", ev.Seq, err)
	}
	commit, root, err := atrepo.LoadCommitFromCAR(ch.ctx, bytes.NewReader(ev.Blocks))
	if err != nil {
		t.Fatalf("commit CAR: %v", err)
	}
	if root.String() != ev.Commit.String() || commit.Rev != ev.Rev || commit.DID != ch.did {
		t.Errorf("CAR root %s rev %s did %s, want %s %s %s", root, commit.Rev, commit.DID, ev.Commit, ev.Rev, ch.did)
	}
	ch.prevRev, ch.prevData = commit.Rev, commit.Data
	ops := map[string]*comatproto.SyncSubscribeRepos_RepoOp{}
	for _, op := range ev.Ops {
		if ops[op.Path] != nil {
			t.Errorf("two ops for %s", op.Path)
		}
		ops[op.Path] = op
	}
	return ops
}

// checkOp checks one op of a commit: its action, its new cid (cur, empty
// for a delete) and the previous one (prev, empty for a create).
func checkOp(t *testing.T, ops map[string]*comatproto.SyncSubscribeRepos_RepoOp, path, action, cur, prev string) {
	t.Helper()
	op := ops[path]
	if op == nil {
		t.Errorf("no op for %s in %v", path, keys(ops))
		return
	}
	str := func(l interface{ String() string }, isNil bool) string {
		if isNil {
			return ""
		}
		return l.String()
	}
	gotCur, gotPrev := str(op.Cid, op.Cid == nil), str(op.Prev, op.Prev == nil)
	if op.Action != action || gotCur != cur || gotPrev != prev {
		t.Errorf("op %s: %s cid %q prev %q, want %s cid %q prev %q", path, op.Action, gotCur, gotPrev, action, cur, prev)
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// Ensure every commit the firehose emits verifies with indigo and carries
// the right fields: the first after genesis, creates, updates, deletes and
// a mixed applyWrites batch.
func TestFirehose_CommitsVerify(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t)
	tok := s.AdminToken()
	dir := didDirectory(t, s)
	c, ctx := dial(t, s, "?cursor=0")

	// Genesis: #identity, #account, #sync (whose commit is the base of the
	// chain, and verifies through the DID document too).
	ch := &commitChain{t: t, ctx: ctx, dir: dir, did: s.DID()}
	var types []string
	for i := int64(1); i <= 3; i++ {
		f := readFrame(t, ctx, c)
		if n := f.mustSeq(t); n != i {
			t.Fatalf("genesis frame %d has seq %d", i, n)
		}
		types = append(types, f.T)
		if f.T == "#sync" {
			var sy comatproto.SyncSubscribeRepos_Sync
			if err := sy.UnmarshalCBOR(bytes.NewReader(f.Body)); err != nil {
				t.Fatal(err)
			}
			commit, err := atrepo.VerifySyncMessage(ctx, dir, &sy)
			if err != nil {
				t.Fatalf("genesis #sync does not verify: %v", err)
			}
			if sy.Did != s.DID() || sy.Rev != commit.Rev {
				t.Errorf("genesis #sync %s %s, commit rev %s", sy.Did, sy.Rev, commit.Rev)
			}
			ch.prevRev, ch.prevData = commit.Rev, commit.Data
		}
	}
	if fmt.Sprint(types) != "[#identity #account #sync]" {
		t.Fatalf("genesis frames %v, want [#identity #account #sync]", types)
	}
	ch.seq = 3

	// First commit after genesis.
	w := s.CreateRecord(t, postColl, "", pdstest.Post("first"))
	ops := ch.next(c, w.Commit)
	checkOp(t, ops, pathOf(t, w.URI), "create", w.CID, "")
	if len(ops) != 1 {
		t.Errorf("ops %v", keys(ops))
	}

	cids := map[string]string{}
	for _, rk := range []string{"upd", "del", "batch-upd", "batch-del"} {
		w := s.CreateRecord(t, unknownColl, rk, thing(len(rk)))
		ops := ch.next(c, w.Commit)
		checkOp(t, ops, unknownColl+"/"+rk, "create", w.CID, "")
		cids[rk] = w.CID
	}

	t.Run("update", func(t *testing.T) {
		ch.t = t
		var w writeOut
		s.Call(t, post, putRecord, nil, obj{"repo": s.DID(), "collection": unknownColl, "rkey": "upd", "record": thing(100)}, tok, &w)
		ops := ch.next(c, w.Commit)
		checkOp(t, ops, unknownColl+"/upd", "update", w.CID, cids["upd"])
		if len(ops) != 1 {
			t.Errorf("ops %v", keys(ops))
		}
		cids["upd"] = w.CID
	})
	t.Run("putRecord create", func(t *testing.T) {
		ch.t = t
		var w writeOut
		s.Call(t, post, putRecord, nil, obj{"repo": s.DID(), "collection": unknownColl, "rkey": "put-new", "record": thing(5)}, tok, &w)
		checkOp(t, ch.next(c, w.Commit), unknownColl+"/put-new", "create", w.CID, "")
	})
	t.Run("delete", func(t *testing.T) {
		ch.t = t
		var out struct {
			Commit *pdstest.CommitMeta `json:"commit"`
		}
		s.Call(t, post, deleteRecord, nil, obj{"repo": s.DID(), "collection": unknownColl, "rkey": "del"}, tok, &out)
		ops := ch.next(c, out.Commit)
		checkOp(t, ops, unknownColl+"/del", "delete", "", cids["del"])
		if len(ops) != 1 {
			t.Errorf("ops %v", keys(ops))
		}
	})
	t.Run("applyWrites create+update+delete", func(t *testing.T) {
		ch.t = t
		var out applyOut
		s.Call(t, post, applyWrites, nil, obj{"repo": s.DID(), "writes": []obj{
			{"$type": awCreate, "collection": unknownColl, "rkey": "batch-new", "value": thing(7)},
			{"$type": awUpdate, "collection": unknownColl, "rkey": "batch-upd", "value": thing(8)},
			{"$type": awDelete, "collection": unknownColl, "rkey": "batch-del"},
		}}, tok, &out)
		if len(out.Results) != 3 {
			t.Fatalf("results %+v", out.Results)
		}
		ops := ch.next(c, out.Commit)
		if len(ops) != 3 {
			t.Errorf("ops %v, want 3", keys(ops))
		}
		checkOp(t, ops, unknownColl+"/batch-new", "create", out.Results[0].CID, "")
		checkOp(t, ops, unknownColl+"/batch-upd", "update", out.Results[1].CID, cids["batch-upd"])
		checkOp(t, ops, unknownColl+"/batch-del", "delete", "", cids["batch-del"])
	})
	t.Run("deleting the last record of a collection", func(t *testing.T) {
		ch.t = t
		w := s.CreateRecord(t, "com.example.solo", "only", obj{"x": 1})
		checkOp(t, ch.next(c, w.Commit), "com.example.solo/only", "create", w.CID, "")
		var out struct {
			Commit *pdstest.CommitMeta `json:"commit"`
		}
		s.Call(t, post, deleteRecord, nil, obj{"repo": s.DID(), "collection": "com.example.solo", "rkey": "only"}, tok, &out)
		checkOp(t, ch.next(c, out.Commit), "com.example.solo/only", "delete", "", w.CID)
	})
}

// frames returns the frames the hub should send for stored events.
func storedFrames(t *testing.T, evs []pdstest.Event) [][]byte {
	t.Helper()
	out := make([][]byte, len(evs))
	for i, ev := range evs {
		b, err := sequencer.Frame(sequencer.Stored{Seq: ev.Seq, Type: ev.Type, Payload: ev.Payload})
		if err != nil {
			t.Fatal(err)
		}
		out[i] = b
	}
	return out
}

// expectStored reads one frame per stored event and checks it is exactly
// the frame of that event.
func expectStored(t *testing.T, ctx context.Context, c *websocket.Conn, evs []pdstest.Event) {
	t.Helper()
	want := storedFrames(t, evs)
	for i, ev := range evs {
		f := readFrame(t, ctx, c)
		if n, err := f.seq(); err != nil || n != ev.Seq {
			t.Fatalf("frame %d: %s seq %d (%v), want %s seq %d", i, f.T, n, err, ev.Type, ev.Seq)
		}
		if !bytes.Equal(f.Raw, want[i]) {
			t.Fatalf("frame of seq %d differs from the stored event's", ev.Seq)
		}
	}
}

// hangUp closes a subscription and waits until the hub has dropped it.
func hangUp(t *testing.T, s *pdstest.Server, c *websocket.Conn) {
	t.Helper()
	c.Close(websocket.StatusNormalClosure, "")
	waitSubscribers(t, s, 0)
}

// Ensure replay starts exactly where the cursor says.
func TestFirehose_Cursor(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t)
	for i := 0; i < 6; i++ {
		s.CreateRecord(t, unknownColl, "", thing(i))
	}
	all := s.Events(t, 0)
	latest := all[len(all)-1].Seq
	if latest != 9 || all[0].Seq != 1 {
		t.Fatalf("stored seqs %d..%d, want 1..9", all[0].Seq, latest)
	}

	t.Run("zero replays everything from genesis", func(t *testing.T) {
		c, ctx := dial(t, s, "?cursor=0")
		var types []string
		for _, ev := range all[:3] {
			types = append(types, ev.Type)
		}
		if fmt.Sprint(types) != "[identity account sync]" {
			t.Errorf("genesis events %v", types)
		}
		expectStored(t, ctx, c, all)
		hangUp(t, s, c)
	})
	t.Run("middle cursor starts at cursor+1", func(t *testing.T) {
		c, ctx := dial(t, s, "?cursor=4")
		expectStored(t, ctx, c, all[4:])
		// Then live, with no gap.
		s.CreateRecord(t, unknownColl, "", thing(1))
		latest++
		f := readFrame(t, ctx, c)
		if n := f.mustSeq(t); n != latest {
			t.Fatalf("live frame seq %d, want %d", n, latest)
		}
		hangUp(t, s, c)
	})
	t.Run("latest cursor replays nothing", func(t *testing.T) {
		c, ctx := dial(t, s, fmt.Sprintf("?cursor=%d", latest))
		w := s.CreateRecord(t, unknownColl, "", thing(2))
		latest++
		f := readFrame(t, ctx, c)
		if ev := f.commit(t); ev.Seq != latest || ev.Rev != w.Commit.Rev {
			t.Fatalf("first frame seq %d rev %s, want %d %s", ev.Seq, ev.Rev, latest, w.Commit.Rev)
		}
		hangUp(t, s, c)
	})
	t.Run("no cursor starts live", func(t *testing.T) {
		c, ctx := dial(t, s, "")
		waitSubscribers(t, s, 1)
		w := s.CreateRecord(t, unknownColl, "", thing(3))
		latest++
		f := readFrame(t, ctx, c)
		if ev := f.commit(t); ev.Seq != latest || ev.Rev != w.Commit.Rev {
			t.Fatalf("first frame seq %d rev %s, want %d %s", ev.Seq, ev.Rev, latest, w.Commit.Rev)
		}
		hangUp(t, s, c)
	})
	t.Run("future cursor", func(t *testing.T) {
		c, ctx := dial(t, s, fmt.Sprintf("?cursor=%d", latest+1))
		f := readFrame(t, ctx, c)
		if f.Op != -1 || f.T != "" {
			t.Fatalf("frame op %d t %q, want an error frame", f.Op, f.T)
		}
		if name, _ := f.errorBody(t); name != "FutureCursor" {
			t.Errorf("error %q, want FutureCursor", name)
		}
		_, _, err := c.Read(ctx)
		if websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
			t.Fatalf("after the error frame: %v, want close 1008", err)
		}
		waitSubscribers(t, s, 0)
	})
	t.Run("invalid cursors", func(t *testing.T) {
		for _, v := range []string{"-1", "abc", "1.5"} {
			status, b := s.Do(t, get, "com.atproto.sync.subscribeRepos", q("cursor", v), nil, "")
			pdstest.MustError(t, status, b, http.StatusBadRequest, "InvalidRequest")
			if _, _, err := websocket.Dial(context.Background(), wsURL(s, "?cursor="+v), nil); err == nil {
				t.Errorf("cursor %s: upgrade accepted", v)
			}
		}
	})
}

// ageEvents backdates the events up to seq through a second connection
// to the server's database, so that the retention pass prunes them.
func ageEvents(t *testing.T, s *pdstest.Server, upTo int64) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.ToSlash(filepath.Join(s.DataDir(), config.DatabaseFile))+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec("UPDATE firehose_events SET created_at = '2000-01-01T00:00:00.000Z' WHERE seq <= ?", upTo); err != nil {
		t.Fatalf("age events: %v", err)
	}
}

// waitOldest waits until the oldest stored event is oldest (0: none left).
func waitOldest(t *testing.T, s *pdstest.Server, oldest int64) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		evs := s.Events(t, 0)
		got := int64(0)
		if len(evs) > 0 {
			got = evs[0].Seq
		}
		if got == oldest {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("oldest stored event %d, want %d", got, oldest)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Ensure a cursor older than the retained events gets #info OutdatedCursor
// and then every retained event from the oldest, and that seqs continue
// after pruning and restarts.
//
// Pruning only runs in the server's housekeeping (at start, then every ten
// minutes), so the test backdates events and restarts the server.
func TestFirehose_OutdatedCursor(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t, pdstest.WithConfig(func(c *config.Config) { c.FirehoseRetention = "1m" }))
	for i := 0; i < 8; i++ {
		s.CreateRecord(t, unknownColl, "", thing(i))
	}
	ageEvents(t, s, 6)
	s.Restart(t)
	waitOldest(t, s, 7)
	kept := s.Events(t, 0)
	if kept[0].Seq != 7 || kept[len(kept)-1].Seq != 11 {
		t.Fatalf("retained %d..%d, want 7..11", kept[0].Seq, kept[len(kept)-1].Seq)
	}

	for _, cursor := range []int64{0, 2, 5} {
		t.Run(fmt.Sprintf("cursor %d", cursor), func(t *testing.T) {
			c, ctx := dial(t, s, fmt.Sprintf("?cursor=%d", cursor))
			f := readFrame(t, ctx, c)
			if f.Op != 1 || f.T != "#info" {
				t.Fatalf("first frame op %d %s, want #info", f.Op, f.T)
			}
			if name, _ := f.errorBody(t); name != "OutdatedCursor" {
				t.Fatalf("#info %q, want OutdatedCursor", name)
			}
			expectStored(t, ctx, c, kept)
			hangUp(t, s, c)
		})
	}
	t.Run("cursor just before the oldest", func(t *testing.T) {
		c, ctx := dial(t, s, "?cursor=6")
		expectStored(t, ctx, c, kept)
		hangUp(t, s, c)
	})
	t.Run("seqs continue after pruning", func(t *testing.T) {
		c, ctx := dial(t, s, "?cursor=2")
		readFrame(t, ctx, c) // #info
		expectStored(t, ctx, c, kept)
		s.CreateRecord(t, unknownColl, "", thing(1))
		if n := readFrame(t, ctx, c).mustSeq(t); n != 12 {
			t.Fatalf("next seq %d, want 12", n)
		}
		hangUp(t, s, c)
	})
	t.Run("everything pruned", func(t *testing.T) {
		ageEvents(t, s, 12)
		s.Restart(t)
		waitOldest(t, s, 0)
		// With every event pruned, an old cursor still learns it missed
		// events, and the next event still gets the next seq.
		c, ctx := dial(t, s, "?cursor=3")
		s.CreateRecord(t, unknownColl, "", thing(2))
		f := readFrame(t, ctx, c)
		if f.T == "#info" {
			if name, _ := f.errorBody(t); name != "OutdatedCursor" {
				t.Errorf("#info %q, want OutdatedCursor", name)
			}
			f = readFrame(t, ctx, c)
		} else {
			t.Errorf("cursor 3 with every event pruned: no #info OutdatedCursor frame (first frame %s)", f.T)
		}
		if n := f.mustSeq(t); n != 13 {
			t.Fatalf("next seq %d, want 13", n)
		}
		hangUp(t, s, c)
	})
}

// Ensure seqs stay monotonic across a restart and a replay shows every
// event exactly once.
func TestFirehose_RestartKeepsSeq(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t)
	for i := 0; i < 3; i++ {
		s.CreateRecord(t, unknownColl, "", thing(i))
	}
	latest := s.LastSeq(t)
	c, ctx := dial(t, s, fmt.Sprintf("?cursor=%d", latest))
	s.Restart(t)
	// The subscription ends with the server.
	if _, _, err := c.Read(ctx); err == nil {
		t.Fatalf("subscription survived the restart")
	}
	c, ctx = dial(t, s, fmt.Sprintf("?cursor=%d", latest))
	w := s.CreateRecord(t, unknownColl, "", thing(9))
	if ev := readFrame(t, ctx, c).commit(t); ev.Seq != latest+1 || ev.Rev != w.Commit.Rev {
		t.Fatalf("first event after restart: seq %d rev %s, want %d %s", ev.Seq, ev.Rev, latest+1, w.Commit.Rev)
	}
	all := s.Events(t, 0)
	if int64(len(all)) != latest+1 {
		t.Fatalf("%d stored events, want %d", len(all), latest+1)
	}
	c2, ctx2 := dial(t, s, "?cursor=0")
	expectStored(t, ctx2, c2, all)
	// Nothing more (no duplicate) before the next live event.
	s.CreateRecord(t, unknownColl, "", thing(10))
	if n := readFrame(t, ctx2, c2).mustSeq(t); n != latest+2 {
		t.Fatalf("after the replay: seq %d, want %d", n, latest+2)
	}
}

// Ensure subscribers replaying from 0 while four writers commit get every
// seq exactly once, in order, whenever they connect.
func TestFirehose_HandOverUnderWrites(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t)
	const writers, perWriter = 4, 75
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// A live subscriber from before the first write, then replaying ones
	// connecting as the writes go on, and one after they are done.
	live, err := dialCtx(ctx, s, "")
	if err != nil {
		t.Fatal(err)
	}
	defer live.CloseNow()
	waitSubscribers(t, s, 1)
	var written atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perWriter; i++ {
				status, b := s.Do(t, post, createRecord, nil, obj{"repo": s.DID(), "collection": unknownColl, "record": obj{"w": w, "i": i}}, s.AdminToken())
				if status != http.StatusOK {
					t.Errorf("write: %d %s", status, b)
					return
				}
				written.Add(1)
			}
		}()
	}
	cols := []*collector{collect(ctx, live)}
	starts := []int64{-1}
	for _, at := range []int64{0, 40, 120, 200, 280} {
		for written.Load() < at && ctx.Err() == nil && !t.Failed() {
			time.Sleep(time.Millisecond)
		}
		c, err := dialCtx(ctx, s, "?cursor=0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		cols = append(cols, collect(ctx, c))
		starts = append(starts, written.Load())
	}
	wg.Wait()
	c, err := dialCtx(ctx, s, "?cursor=0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	cols = append(cols, collect(ctx, c))
	starts = append(starts, written.Load())

	final := s.LastSeq(t)
	if final != 3+writers*perWriter {
		t.Fatalf("last seq %d, want %d", final, 3+writers*perWriter)
	}
	for i, col := range cols {
		seqs := col.waitFor(t, final, 20*time.Second)
		from := int64(1)
		if starts[i] < 0 {
			from = 4 // the live subscriber sees only the commits
		}
		if err := checkRun(seqs, from, final); err != nil {
			t.Errorf("subscriber %d (connected after %d writes): %v", i, starts[i], err)
		}
	}
	// Nothing arrives after the last event.
	time.Sleep(50 * time.Millisecond)
	for i, col := range cols {
		if seqs, _ := col.snapshot(); int64(len(seqs)) > final {
			t.Errorf("subscriber %d received %d frames, more than %d", i, len(seqs), final)
		}
	}
}

// Ensure 100 live subscribers each receive every commit, in order.
func TestFirehose_ManySubscribers(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t, pdstest.WithConfig(func(c *config.Config) { c.SyncCommits = false }))
	const subs, writes = 100, 200
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var cols []*collector
	for i := 0; i < subs; i++ {
		c, err := dialCtx(ctx, s, "")
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		cols = append(cols, collect(ctx, c))
	}
	waitSubscribers(t, s, subs)
	first := s.LastSeq(t) + 1
	var revs []string
	for i := 0; i < writes; i++ {
		revs = append(revs, s.CreateRecord(t, unknownColl, "", thing(i)).Commit.Rev)
	}
	final := first + writes - 1
	for i, col := range cols {
		seqs := col.waitFor(t, final, 30*time.Second)
		if err := checkRun(seqs, first, final); err != nil {
			t.Errorf("subscriber %d: %v", i, err)
			continue
		}
		col.mu.Lock()
		got := fmt.Sprint(col.revs)
		col.mu.Unlock()
		if got != fmt.Sprint(revs) {
			t.Errorf("subscriber %d: revs differ from the writes'", i)
		}
	}
}

// Ensure a subscriber that stops reading is cut off without slowing writes
// or other subscribers. The hub drops it once its 1000-frame queue is full,
// which takes as many writes plus what the kernel buffers on the socket
// (about 4 MB on loopback): the records are large so that the socket fills
// after a few hundred writes, and four writers share the work.
func TestFirehose_StalledSubscriber(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t, pdstest.WithConfig(func(c *config.Config) { c.SyncCommits = false }))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	good, err := dialCtx(ctx, s, "")
	if err != nil {
		t.Fatal(err)
	}
	defer good.CloseNow()
	waitSubscribers(t, s, 1)
	stalled, err := dialCtx(ctx, s, "") // never read until the end
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.CloseNow()
	waitSubscribers(t, s, 2)
	col := collect(ctx, good)

	first := s.LastSeq(t) + 1
	big := strings.Repeat("x", 16<<10)
	const writers, maxPerWriter, extra = 4, 1000, 10
	var (
		mu        sync.Mutex
		durations []time.Duration
		cutAt     = -1
		wg        sync.WaitGroup
	)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			after := 0 // writes since the cut
			for i := 0; i < maxPerWriter && after < extra; i++ {
				start := time.Now()
				status, b := s.Do(t, post, createRecord, nil, obj{"repo": s.DID(), "collection": unknownColl, "record": obj{"w": w, "i": i, "big": big}}, s.AdminToken())
				d := time.Since(start)
				if status != http.StatusOK {
					t.Errorf("write: %d %s", status, truncate(b))
					return
				}
				mu.Lock()
				durations = append(durations, d)
				if cutAt < 0 && subscribers(s) == 1 {
					cutAt = len(durations)
				}
				cut := cutAt >= 0
				mu.Unlock()
				if cut {
					after++
				}
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	if cutAt < 0 {
		t.Fatalf("the stalled subscriber is still connected after %d writes", len(durations))
	}
	slowest := slices.Max(durations)
	t.Logf("stalled subscriber dropped after %d writes; %d writes in all, median %v, slowest %v", cutAt, len(durations), median(durations), slowest)
	// A writer held up by the stalled subscriber would wait for the
	// subscriber's 15 s write timeout: nothing else would ever cut the
	// subscriber, since the writes that fill its queue could not happen.
	// A heavily loaded machine under -race has taken over a second for a
	// 16 KB record, never five.
	if slowest > 5*time.Second {
		t.Errorf("slowest write took %v", slowest)
	}
	final := s.LastSeq(t)
	if final != first+int64(len(durations))-1 {
		t.Fatalf("last seq %d, want %d", final, first+int64(len(durations))-1)
	}
	if err := checkRun(col.waitFor(t, final, 20*time.Second), first, final); err != nil {
		t.Errorf("well-behaved subscriber: %v", err)
	}
	if n := subscribers(s); n != 1 {
		t.Errorf("%d subscribers, want only the well-behaved one", n)
	}

	// Reading at last, the stalled one finds the frames its socket held,
	// in order from the first, and then the end of the stream.
	var seqs []int64
	var end error
	for {
		_, data, err := stalled.Read(ctx)
		if err != nil {
			end = err
			break
		}
		f, err := parseFrame(data)
		if err != nil {
			t.Fatal(err)
		}
		if f.Op == -1 {
			if name, _ := f.errorBody(t); name != "ConsumerTooSlow" {
				t.Errorf("error frame %q, want ConsumerTooSlow", name)
			}
			t.Logf("stalled subscriber got a ConsumerTooSlow frame")
			continue
		}
		seqs = append(seqs, f.mustSeq(t))
	}
	if ctx.Err() != nil {
		t.Fatalf("the stalled subscriber's stream did not end (%d frames read): %v", len(seqs), end)
	}
	if len(seqs) > 0 {
		if err := checkRun(seqs, first, seqs[len(seqs)-1]); err != nil {
			t.Errorf("stalled subscriber: %v", err)
		}
	}
	t.Logf("stalled subscriber read %d frames, then: %v", len(seqs), end)
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
	return s[len(s)/2]
}
