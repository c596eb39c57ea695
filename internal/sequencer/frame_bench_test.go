package sequencer_test

import (
	"bytes"
	"testing"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	lexutil "github.com/bluesky-social/indigo/lex/util"
	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"

	"stratus/internal/sequencer"
)

// BenchmarkFrame measures encoding one stored #commit event as a
// subscribeRepos frame (decode the stored body, set seq, encode header and
// body): the work the server does once per event, before fanning the same
// bytes out to every subscriber. The event is the size of a single
// createRecord commit (about 1.5 KB of blocks).
func BenchmarkFrame(b *testing.B) {
	sum := func(s string) cid.Cid {
		h, err := multihash.Sum([]byte(s), multihash.SHA2_256, -1)
		if err != nil {
			b.Fatal(err)
		}
		return cid.NewCidV1(cid.DagCBOR, h)
	}
	since := "3jzfcijpj2z2a"
	prev := lexutil.LexLink(sum("prev data"))
	rec := lexutil.LexLink(sum("record"))
	blocks := bytes.Repeat([]byte("0123456789abcdef"), 96)
	ev, err := sequencer.Commit(&comatproto.SyncSubscribeRepos_Commit{
		Repo:     "did:plc:ewvi7nxzyoun6zhxrhs64oiz",
		Rev:      "3jzfcijpj2z2b",
		Since:    &since,
		Commit:   lexutil.LexLink(sum("commit")),
		PrevData: &prev,
		Blocks:   blocks,
		Ops:      []*comatproto.SyncSubscribeRepos_RepoOp{{Action: "create", Path: "app.bsky.feed.post/3jzfcijpj2z2b", Cid: &rec}},
		Blobs:    []lexutil.LexLink{},
		Time:     sequencer.Timestamp(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)),
	})
	if err != nil {
		b.Fatal(err)
	}
	stored := sequencer.Stored{Seq: 42, Type: ev.Type, Payload: ev.Payload}
	b.ReportAllocs()
	b.SetBytes(int64(len(ev.Payload)))
	for b.Loop() {
		if _, err := sequencer.Frame(stored); err != nil {
			b.Fatal(err)
		}
	}
}
