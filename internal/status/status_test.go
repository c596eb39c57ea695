package status_test

import (
	"bytes"
	"testing"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	lexutil "github.com/bluesky-social/indigo/lex/util"
	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"

	"stratus/internal/status"
)

func TestBytes(t *testing.T) {
	for _, tc := range []struct {
		n    int64
		want string
	}{
		{0, "0 B"}, {1023, "1023 B"}, {1024, "1.0 KiB"}, {1536, "1.5 KiB"},
		{5 << 20, "5.0 MiB"}, {3 << 30, "3.0 GiB"}, {2 << 40, "2.0 TiB"},
	} {
		if got := status.Bytes(tc.n); got != tc.want {
			t.Errorf("Bytes(%d) = %q, want %q", tc.n, got, tc.want)
		}
	}
}

func TestDuration(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{0, "0s"}, {1500 * time.Millisecond, "2s"}, {90 * time.Second, "1m30s"},
		{2*time.Hour + 5*time.Minute, "2h5m"}, {72 * time.Hour, "3d"}, {76 * time.Hour, "3d4h"},
	} {
		if got := status.Duration(tc.d); got != tc.want {
			t.Errorf("Duration(%v) = %q, want %q", tc.d, got, tc.want)
		}
	}
}

func TestDescribe(t *testing.T) {
	var buf bytes.Buffer
	link, err := cid.NewPrefixV1(cid.DagCBOR, multihash.SHA2_256).Sum([]byte("commit"))
	if err != nil {
		t.Fatal(err)
	}
	c := comatproto.SyncSubscribeRepos_Commit{Repo: "did:web:pds.test", Rev: "3k2", Commit: lexutil.LexLink(link), Ops: []*comatproto.SyncSubscribeRepos_RepoOp{
		{Action: "create", Path: "app.bsky.feed.post/a"}, {Action: "delete", Path: "app.bsky.feed.post/b"},
		{Action: "update", Path: "app.bsky.actor.profile/self"}, {Action: "create", Path: "app.bsky.feed.like/c"},
	}, Blocks: []byte{}, Blobs: nil, Time: "2026-01-01T00:00:00Z"}
	if err := c.MarshalCBOR(&buf); err != nil {
		t.Fatal(err)
	}
	commit := buf.Bytes()
	h := "alice.test"
	buf = bytes.Buffer{}
	if err := (&comatproto.SyncSubscribeRepos_Identity{Did: "did:web:pds.test", Handle: &h, Time: "2026-01-01T00:00:00Z"}).MarshalCBOR(&buf); err != nil {
		t.Fatal(err)
	}
	identity := buf.Bytes()
	st := "deactivated"
	buf = bytes.Buffer{}
	if err := (&comatproto.SyncSubscribeRepos_Account{Did: "did:web:pds.test", Status: &st, Time: "2026-01-01T00:00:00Z"}).MarshalCBOR(&buf); err != nil {
		t.Fatal(err)
	}
	account := buf.Bytes()
	for _, tc := range []struct {
		typ     string
		payload []byte
		want    string
	}{
		{"commit", commit, "create app.bsky.feed.post/a, delete app.bsky.feed.post/b, update app.bsky.actor.profile/self, (+1 more)"},
		{"identity", identity, "handle alice.test"},
		{"account", account, "deactivated"},
		{"commit", []byte{0xff}, "undecodable commit"},
		{"unknown", nil, ""},
	} {
		if got := status.Describe(tc.typ, tc.payload); got != tc.want {
			t.Errorf("Describe(%s) = %q, want %q", tc.typ, got, tc.want)
		}
	}
}
