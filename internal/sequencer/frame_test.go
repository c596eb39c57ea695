package sequencer_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/atdata"
	"github.com/bluesky-social/indigo/atproto/syntax"
	lexutil "github.com/bluesky-social/indigo/lex/util"
	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
	cbg "github.com/whyrusleeping/cbor-gen"

	"stratus/internal/sequencer"
)

// indigoHeader encodes a frame header exactly as indigo's
// events.EventHeader.MarshalCBOR does (cbor-gen, canonical key order, t
// omitted when empty). indigo's events package is not in this module's
// graph, so its generated encoder is reproduced here.
func indigoHeader(t *testing.T, op int64, msgType string) []byte {
	t.Helper()
	var buf bytes.Buffer
	cw := cbg.NewCborWriter(&buf)
	n := uint64(2)
	if msgType == "" {
		n = 1
	}
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(cw.WriteMajorTypeHeader(cbg.MajMap, n))
	if msgType != "" {
		must(cw.WriteMajorTypeHeader(cbg.MajTextString, 1))
		_, err := cw.WriteString("t")
		must(err)
		must(cw.WriteMajorTypeHeader(cbg.MajTextString, uint64(len(msgType))))
		_, err = cw.WriteString(msgType)
		must(err)
	}
	must(cw.WriteMajorTypeHeader(cbg.MajTextString, 2))
	_, err := cw.WriteString("op")
	must(err)
	if op >= 0 {
		must(cw.WriteMajorTypeHeader(cbg.MajUnsignedInt, uint64(op)))
	} else {
		must(cw.WriteMajorTypeHeader(cbg.MajNegativeInt, uint64(-op-1)))
	}
	return buf.Bytes()
}

// indigoErrorBody encodes indigo's events.ErrorFrame{Error, Message}.
func indigoErrorBody(t *testing.T, name, message string) []byte {
	t.Helper()
	var buf bytes.Buffer
	cw := cbg.NewCborWriter(&buf)
	write := func(s string) {
		if err := cw.WriteMajorTypeHeader(cbg.MajTextString, uint64(len(s))); err != nil {
			t.Fatal(err)
		}
		if _, err := cw.WriteString(s); err != nil {
			t.Fatal(err)
		}
	}
	if err := cw.WriteMajorTypeHeader(cbg.MajMap, 2); err != nil {
		t.Fatal(err)
	}
	write("error")
	write(name)
	write("message")
	write(message)
	return buf.Bytes()
}

// splitFrame splits a frame into its decoded header and its body bytes.
func splitFrame(t *testing.T, data []byte) (map[string]any, []byte) {
	t.Helper()
	r := bytes.NewReader(data)
	if err := cbg.ScanForLinks(r, func(cid.Cid) {}); err != nil {
		t.Fatalf("frame header: %v", err)
	}
	n := len(data) - r.Len()
	hdr, err := atdata.UnmarshalCBOR(data[:n])
	if err != nil {
		t.Fatalf("frame header: %v", err)
	}
	return hdr, data[n:]
}

func testCID(t *testing.T, s string) cid.Cid {
	t.Helper()
	h, err := multihash.Sum([]byte(s), multihash.SHA2_256, -1)
	if err != nil {
		t.Fatal(err)
	}
	return cid.NewCidV1(cid.DagCBOR, h)
}

func link(c cid.Cid) *lexutil.LexLink {
	l := lexutil.LexLink(c)
	return &l
}

// sampleCommit is a #commit body with every field set, as the repository
// engine builds it (seq 0, empty blobs).
func sampleCommit(t *testing.T) *comatproto.SyncSubscribeRepos_Commit {
	since := "3jzfcijpj2z2a"
	return &comatproto.SyncSubscribeRepos_Commit{
		Repo:     "did:plc:abc",
		Rev:      "3jzfcijpj2z2b",
		Since:    &since,
		Commit:   lexutil.LexLink(testCID(t, "commit")),
		PrevData: link(testCID(t, "prev data")),
		Blocks:   []byte{0x3a, 0xa2, 1, 2, 3},
		Ops: []*comatproto.SyncSubscribeRepos_RepoOp{
			{Action: "create", Path: "app.bsky.feed.post/a", Cid: link(testCID(t, "a"))},
			{Action: "update", Path: "app.bsky.feed.post/b", Cid: link(testCID(t, "b2")), Prev: link(testCID(t, "b1"))},
			{Action: "delete", Path: "app.bsky.feed.post/c", Prev: link(testCID(t, "c"))},
		},
		Blobs: []lexutil.LexLink{},
		Time:  sequencer.Timestamp(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)),
	}
}

// Ensure Frame writes the header {op: 1, t: "#<type>"} and the body with
// the seq spliced in, byte for byte as indigo's events package would.
func TestFrame_MatchesIndigo(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 600_000_000, time.UTC)
	did := syntax.DID("did:plc:abc")
	const seq = 1234567

	commitEv, err := sequencer.Commit(sampleCommit(t))
	if err != nil {
		t.Fatal(err)
	}
	syncEv, err := sequencer.Sync(did, "3jzfcijpj2z2a", []byte{1, 2, 3}, at)
	if err != nil {
		t.Fatal(err)
	}
	identityEv, err := sequencer.Identity(did, "alice.test", at)
	if err != nil {
		t.Fatal(err)
	}
	accountEv, err := sequencer.Account(did, false, "deactivated", at)
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		ev sequencer.Event
		// body decodes the frame body and returns it along with the
		// original event decoded with seq set, for comparison, and the
		// indigo encoding of that original.
		body func(body []byte) (got, want any, wantBytes []byte)
	}{
		{commitEv, func(body []byte) (any, any, []byte) {
			var got comatproto.SyncSubscribeRepos_Commit
			decode(t, body, got.UnmarshalCBOR)
			// cbor-gen decodes an empty array as nil; on the wire blobs
			// must be an empty array.
			if m, err := atdata.UnmarshalCBOR(body); err != nil {
				t.Fatal(err)
			} else if b, ok := m["blobs"].([]any); !ok || len(b) != 0 {
				t.Errorf("blobs on the wire: %#v, want []", m["blobs"])
			}
			if got.Blobs == nil {
				got.Blobs = []lexutil.LexLink{}
			}
			want := sampleCommit(t)
			want.Seq = seq
			return &got, want, encode(t, want.MarshalCBOR)
		}},
		{syncEv, func(body []byte) (any, any, []byte) {
			var got comatproto.SyncSubscribeRepos_Sync
			decode(t, body, got.UnmarshalCBOR)
			want := &comatproto.SyncSubscribeRepos_Sync{Did: did.String(), Rev: "3jzfcijpj2z2a", Blocks: []byte{1, 2, 3}, Time: "2026-01-02T03:04:05.6Z", Seq: seq}
			return &got, want, encode(t, want.MarshalCBOR)
		}},
		{identityEv, func(body []byte) (any, any, []byte) {
			var got comatproto.SyncSubscribeRepos_Identity
			decode(t, body, got.UnmarshalCBOR)
			h := "alice.test"
			want := &comatproto.SyncSubscribeRepos_Identity{Did: did.String(), Handle: &h, Time: "2026-01-02T03:04:05.6Z", Seq: seq}
			return &got, want, encode(t, want.MarshalCBOR)
		}},
		{accountEv, func(body []byte) (any, any, []byte) {
			var got comatproto.SyncSubscribeRepos_Account
			decode(t, body, got.UnmarshalCBOR)
			st := "deactivated"
			want := &comatproto.SyncSubscribeRepos_Account{Did: did.String(), Active: false, Status: &st, Time: "2026-01-02T03:04:05.6Z", Seq: seq}
			return &got, want, encode(t, want.MarshalCBOR)
		}},
	} {
		t.Run(tc.ev.Type, func(t *testing.T) {
			frame, err := sequencer.Frame(sequencer.Stored{Seq: seq, Type: tc.ev.Type, Payload: tc.ev.Payload})
			if err != nil {
				t.Fatal(err)
			}
			hdr, body := splitFrame(t, frame)
			if want := map[string]any{"op": int64(1), "t": "#" + tc.ev.Type}; !reflect.DeepEqual(hdr, want) {
				t.Errorf("header %v, want %v", hdr, want)
			}
			got, want, wantBody := tc.body(body)
			if gj, wj := mustJSON(t, got), mustJSON(t, want); gj != wj {
				t.Errorf("body %s, want %s", gj, wj)
			}
			wantFrame := append(indigoHeader(t, 1, "#"+tc.ev.Type), wantBody...)
			if !bytes.Equal(frame, wantFrame) {
				t.Errorf("frame differs from indigo's encoding:\n got %x\nwant %x", frame, wantFrame)
			}
			// The stored payload (seq 0) is left untouched.
			if !bytes.Equal(tc.ev.Payload, mustFrameBody(t, tc.ev)) {
				t.Errorf("Frame modified the stored payload")
			}
		})
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// mustFrameBody re-encodes ev as stored: Frame must not have changed it.
func mustFrameBody(t *testing.T, ev sequencer.Event) []byte {
	t.Helper()
	frame, err := sequencer.Frame(sequencer.Stored{Seq: 0, Type: ev.Type, Payload: ev.Payload})
	if err != nil {
		t.Fatal(err)
	}
	_, body := splitFrame(t, frame)
	return body
}

func decode(t *testing.T, b []byte, fn func(io.Reader) error) {
	t.Helper()
	if err := fn(bytes.NewReader(b)); err != nil {
		t.Fatalf("decode body: %v", err)
	}
}

func encode(t *testing.T, fn func(io.Writer) error) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := fn(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// Ensure the #info frame is {op: 1, t: "#info"} + {name, message}, as
// indigo encodes SyncSubscribeRepos_Info.
func TestInfoFrame(t *testing.T) {
	frame, err := sequencer.InfoFrame("OutdatedCursor", "Requested cursor exceeded limit. Possibly missing events")
	if err != nil {
		t.Fatal(err)
	}
	hdr, body := splitFrame(t, frame)
	if want := map[string]any{"op": int64(1), "t": "#info"}; !reflect.DeepEqual(hdr, want) {
		t.Errorf("header %v, want %v", hdr, want)
	}
	var info comatproto.SyncSubscribeRepos_Info
	if err := info.UnmarshalCBOR(bytes.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	if info.Name != "OutdatedCursor" || info.Message == nil || !strings.HasPrefix(*info.Message, "Requested cursor") {
		t.Errorf("info %+v", info)
	}
	m := "Requested cursor exceeded limit. Possibly missing events"
	want := append(indigoHeader(t, 1, "#info"), encode(t, (&comatproto.SyncSubscribeRepos_Info{Name: "OutdatedCursor", Message: &m}).MarshalCBOR)...)
	if !bytes.Equal(frame, want) {
		t.Errorf("info frame differs from indigo's encoding:\n got %x\nwant %x", frame, want)
	}
}

// Ensure the error frame is {op: -1} (no t) + {error, message}, as
// indigo encodes events.ErrorFrame.
func TestErrorFrame(t *testing.T) {
	for _, name := range []string{"FutureCursor", "ConsumerTooSlow"} {
		frame, err := sequencer.ErrorFrame(name, "some message")
		if err != nil {
			t.Fatal(err)
		}
		hdr, body := splitFrame(t, frame)
		if want := map[string]any{"op": int64(-1)}; !reflect.DeepEqual(hdr, want) {
			t.Errorf("header %v, want %v", hdr, want)
		}
		b, err := atdata.UnmarshalCBOR(body)
		if err != nil {
			t.Fatal(err)
		}
		if want := map[string]any{"error": name, "message": "some message"}; !reflect.DeepEqual(b, want) {
			t.Errorf("body %v, want %v", b, want)
		}
		want := append(indigoHeader(t, -1, ""), indigoErrorBody(t, name, "some message")...)
		if !bytes.Equal(frame, want) {
			t.Errorf("%s frame differs from indigo's encoding:\n got %x\nwant %x", name, frame, want)
		}
	}
	// The header bytes themselves: {"op": -1}.
	if got := indigoHeader(t, -1, ""); fmt.Sprintf("%x", got) != "a1626f7020" {
		t.Errorf("reference header %x", got)
	}
}

// Ensure Frame refuses what it cannot encode.
func TestFrame_Errors(t *testing.T) {
	if _, err := sequencer.Frame(sequencer.Stored{Seq: 1, Type: "bogus", Payload: []byte{0xa0}}); err == nil {
		t.Errorf("unknown type accepted")
	}
	for _, typ := range []string{sequencer.TypeCommit, sequencer.TypeSync, sequencer.TypeIdentity, sequencer.TypeAccount} {
		if _, err := sequencer.Frame(sequencer.Stored{Seq: 1, Type: typ, Payload: []byte{0xff, 0x00}}); err == nil {
			t.Errorf("%s: corrupt payload accepted", typ)
		}
	}
}

// Ensure SplitFrame reads back what Frame, InfoFrame and ErrorFrame write
// and refuses headers that are not {op, t?}.
func TestSplitFrame(t *testing.T) {
	info, err := sequencer.InfoFrame("OutdatedCursor", "old")
	if err != nil {
		t.Fatal(err)
	}
	errFrame, err := sequencer.ErrorFrame("FutureCursor", "ahead")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		data []byte
		op   int64
		typ  string
	}{{info, 1, "#info"}, {errFrame, -1, ""}} {
		op, typ, body, err := sequencer.SplitFrame(tc.data)
		if err != nil || op != tc.op || typ != tc.typ || len(body) == 0 {
			t.Errorf("SplitFrame = %d %q %d bytes %v; want %d %q", op, typ, len(body), err, tc.op, tc.typ)
		}
	}
	enc := func(v any) []byte {
		b, err := atdata.MarshalCBOR(v.(map[string]any))
		if err != nil {
			t.Fatal(err)
		}
		return append(b, 0xa0)
	}
	for name, data := range map[string][]byte{
		"empty":       nil,
		"no op":       enc(map[string]any{"t": "#commit"}),
		"op a string": enc(map[string]any{"op": "1"}),
		"t a number":  enc(map[string]any{"op": int64(1), "t": int64(2)}),
		"extra field": enc(map[string]any{"op": int64(1), "t": "#commit", "x": int64(0)}),
	} {
		if _, _, _, err := sequencer.SplitFrame(data); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
