package bench

import (
	"slices"
	"strings"
	"testing"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	lexutil "github.com/bluesky-social/indigo/lex/util"
	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"

	"stratus/internal/sequencer"
)

func TestCreatedCIDs(t *testing.T) {
	sum := func(s string) *lexutil.LexLink {
		h, err := multihash.Sum([]byte(s), multihash.SHA2_256, -1)
		if err != nil {
			t.Fatal(err)
		}
		l := lexutil.LexLink(cid.NewCidV1(cid.DagCBOR, h))
		return &l
	}
	created, updated := sum("created"), sum("updated")
	ev, err := sequencer.Commit(&comatproto.SyncSubscribeRepos_Commit{
		Repo: "did:web:pds.test", Rev: "3jzfcijpj2z2b", Commit: *sum("commit"), Blocks: []byte{1},
		Ops: []*comatproto.SyncSubscribeRepos_RepoOp{
			{Action: "create", Path: "app.bsky.feed.post/a", Cid: created},
			{Action: "update", Path: "app.bsky.feed.post/b", Cid: updated, Prev: sum("old")},
			{Action: "delete", Path: "app.bsky.feed.post/c", Prev: sum("gone")},
		},
		Blobs: []lexutil.LexLink{}, Time: sequencer.Timestamp(time.Now()),
	})
	if err != nil {
		t.Fatal(err)
	}
	commit, err := sequencer.Frame(sequencer.Stored{Seq: 7, Type: ev.Type, Payload: ev.Payload})
	if err != nil {
		t.Fatal(err)
	}
	idEv, err := sequencer.Identity("did:web:pds.test", "alice.test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	identity, err := sequencer.Frame(sequencer.Stored{Seq: 8, Type: idEv.Type, Payload: idEv.Payload})
	if err != nil {
		t.Fatal(err)
	}
	tooSlow, err := sequencer.ErrorFrame("ConsumerTooSlow", "too slow")
	if err != nil {
		t.Fatal(err)
	}

	fc := newFrameCache()
	for range 2 { // the second round answers from the cache
		fi := fc.decode(commit)
		if fi.err != nil || !slices.Equal(fi.cids, []string{created.String()}) {
			t.Errorf("commit: %v, %v; want only the created record's CID", fi.cids, fi.err)
		}
		if fi := fc.decode(identity); fi.err != nil || len(fi.cids) != 0 {
			t.Errorf("identity: %v, %v", fi.cids, fi.err)
		}
		if fi := fc.decode(tooSlow); fi.err == nil || !strings.Contains(fi.err.Error(), "ConsumerTooSlow") {
			t.Errorf("error frame: %v", fi.err)
		}
		if fi := fc.decode([]byte{0xff}); fi.err == nil {
			t.Error("garbage decoded")
		}
	}
	n := 0
	fc.m.Range(func(any, any) bool { n++; return true })
	if n != 4 {
		t.Errorf("cache holds %d frames, want 4", n)
	}
}

func TestSubscribeURL(t *testing.T) {
	for in, want := range map[string]string{
		"http://127.0.0.1:2583":    "ws://127.0.0.1:2583/xrpc/com.atproto.sync.subscribeRepos",
		"https://pds.example.com/": "wss://pds.example.com/xrpc/com.atproto.sync.subscribeRepos",
		"https://pds.example.com":  "wss://pds.example.com/xrpc/com.atproto.sync.subscribeRepos",
	} {
		if got := subscribeURL(in); got != want {
			t.Errorf("subscribeURL(%q) = %q, want %q", in, got, want)
		}
	}
}
