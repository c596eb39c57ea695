package sequencer

import (
	"bytes"
	"testing"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/syntax"
	lexutil "github.com/bluesky-social/indigo/lex/util"
	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
)

// sampleEvents returns one stored body of every event type.
func sampleEvents(t testing.TB) []Event {
	t.Helper()
	sum := func(s string) lexutil.LexLink {
		h, err := multihash.Sum([]byte(s), multihash.SHA2_256, -1)
		if err != nil {
			t.Fatal(err)
		}
		return lexutil.LexLink(cid.NewCidV1(cid.DagCBOR, h))
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	did := syntax.DID("did:plc:abc")
	since, prev, rec := "3jzfcijpj2z2a", sum("prev"), sum("record")
	commit, err := Commit(&comatproto.SyncSubscribeRepos_Commit{
		Repo: did.String(), Rev: "3jzfcijpj2z2b", Since: &since, Commit: sum("commit"), PrevData: &prev,
		Blocks: bytes.Repeat([]byte{0xa1, 0x63}, 700),
		Ops: []*comatproto.SyncSubscribeRepos_RepoOp{
			{Action: "create", Path: "app.bsky.feed.post/3jzfcijpj2z2b", Cid: &rec},
			{Action: "delete", Path: "app.bsky.feed.like/3jzfcijpj2z2a", Prev: &prev},
		},
		Blobs: []lexutil.LexLink{sum("blob")}, Time: Timestamp(at),
	})
	if err != nil {
		t.Fatal(err)
	}
	sync, err := Sync(did, "3jzfcijpj2z2a", []byte{1, 2, 3}, at)
	if err != nil {
		t.Fatal(err)
	}
	identity, err := Identity(did, "alice.test", at)
	if err != nil {
		t.Fatal(err)
	}
	account, err := Account(did, false, "deactivated", at)
	if err != nil {
		t.Fatal(err)
	}
	return []Event{commit, sync, identity, account}
}

// Ensure the spliced frame is byte for byte the one indigo's decoder and
// encoder give, at every width of the seq's encoding.
func TestFrame_SpliceMatchesDecoded(t *testing.T) {
	seqs := []int64{0, 1, 23, 24, 255, 256, 65535, 65536, 1<<32 - 1, 1 << 32, 1 << 53}
	for _, ev := range sampleEvents(t) {
		if _, ok := seqZeroAt(ev.Payload); !ok {
			t.Fatalf("%s: stored body not recognised", ev.Type)
		}
		for _, seq := range seqs {
			st := Stored{Seq: seq, Type: ev.Type, Payload: ev.Payload}
			got, err := Frame(st)
			if err != nil {
				t.Fatal(err)
			}
			want, err := frameDecoded(frameHeaders[ev.Type], st)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s seq %d:\n got %x\nwant %x", ev.Type, seq, got, want)
			}
		}
	}
}

// Ensure bodies that are not one well-formed map with a zero seq are left
// to the decoder.
func TestSeqZeroAt_Refuses(t *testing.T) {
	ident := sampleEvents(t)[2].Payload
	for name, b := range map[string][]byte{
		"empty":             {},
		"not a map":         {0x80},
		"trailing byte":     append(append([]byte{}, ident...), 0x00),
		"truncated":         ident[:len(ident)-1],
		"no seq":            {0xa1, 0x61, 0x61, 0x00},
		"seq not zero":      {0xa1, 0x63, 's', 'e', 'q', 0x01},
		"seq twice":         {0xa2, 0x63, 's', 'e', 'q', 0x00, 0x63, 's', 'e', 'q', 0x00},
		"indefinite map":    {0xbf, 0x63, 's', 'e', 'q', 0x00, 0xff},
		"non-text key":      {0xa1, 0x01, 0x00},
		"huge array":        {0xa2, 0x63, 's', 'e', 'q', 0x00, 0x61, 'a', 0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
		"huge map":          {0xa2, 0x63, 's', 'e', 'q', 0x00, 0x61, 'a', 0xbb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
		"string past end":   {0xa2, 0x63, 's', 'e', 'q', 0x00, 0x61, 'a', 0x7a, 0x00, 0x01, 0x00, 0x00},
		"deeply nested tag": append(append([]byte{0xa2, 0x63, 's', 'e', 'q', 0x00, 0x61, 'a'}, bytes.Repeat([]byte{0xc1}, 100)...), 0x00),
	} {
		if _, ok := seqZeroAt(b); ok {
			t.Errorf("%s: accepted", name)
		}
	}
}

// FuzzFrame checks that whenever a body is canonical (indigo re-encodes it
// to the same bytes), the spliced frame equals the decoded one; and that
// nothing panics.
func FuzzFrame(f *testing.F) {
	for _, ev := range sampleEvents(f) {
		f.Add(ev.Type, ev.Payload, int64(42))
	}
	f.Fuzz(func(t *testing.T, typ string, payload []byte, seq int64) {
		hdr, ok := frameHeaders[typ]
		if !ok || seq < 0 {
			return
		}
		got, err := Frame(Stored{Seq: seq, Type: typ, Payload: payload})
		want, werr := frameDecoded(hdr, Stored{Seq: seq, Type: typ, Payload: payload})
		zero, zerr := frameDecoded(hdr, Stored{Seq: 0, Type: typ, Payload: payload})
		if werr != nil || zerr != nil || !bytes.Equal(zero[len(hdr):], payload) {
			return // not a body the server writes
		}
		if err != nil {
			t.Fatalf("canonical body refused: %v", err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("spliced frame differs:\n got %x\nwant %x", got, want)
		}
	})
}
