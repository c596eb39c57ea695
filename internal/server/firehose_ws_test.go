package server_test

import (
	"bytes"
	"net/http"
	"testing"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	atrepo "github.com/bluesky-social/indigo/atproto/repo"
	"github.com/coder/websocket"

	"stratus/internal/pdstest"
)

// Ensure a subscriber replaying from 0 sees the genesis events and every
// commit in order, each verifying with indigo, then live events.
func TestSubscribeRepos_ReplayThenLive(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t)
	for i := 0; i < 3; i++ {
		s.CreateRecord(t, "app.bsky.feed.post", "", map[string]any{"text": "hi", "createdAt": "2026-01-01T00:00:00Z"})
	}
	c, ctx := dial(t, s, "?cursor=0")
	var seqs []int64
	commits := 0
	for len(seqs) < 6 {
		f := readFrame(t, ctx, c)
		if f.Op != 1 {
			t.Fatalf("frame op %d %s", f.Op, f.T)
		}
		switch f.T {
		case "#commit":
			var ev comatproto.SyncSubscribeRepos_Commit
			if err := ev.UnmarshalCBOR(bytes.NewReader(f.Body)); err != nil {
				t.Fatal(err)
			}
			if _, err := atrepo.VerifyCommitMessage(ctx, &ev); err != nil {
				t.Fatalf("commit %d does not verify: %v", ev.Seq, err)
			}
			commits++
		}
		seqs = append(seqs, f.mustSeq(t))
	}
	if err := checkRun(seqs, 1, 6); err != nil {
		t.Fatal(err)
	}
	if commits != 3 {
		t.Fatalf("replayed %d commits, want 3", commits)
	}
	// Now a live write arrives.
	s.CreateRecord(t, "app.bsky.feed.post", "", map[string]any{"text": "live", "createdAt": "2026-01-01T00:00:00Z"})
	f := readFrame(t, ctx, c)
	if f.T != "#commit" {
		t.Fatalf("live frame %s", f.T)
	}
	var ev comatproto.SyncSubscribeRepos_Commit
	if err := ev.UnmarshalCBOR(bytes.NewReader(f.Body)); err != nil {
		t.Fatal(err)
	}
	if ev.Seq != 7 {
		t.Errorf("live commit seq = %d, want 7", ev.Seq)
	}
}

// Ensure a cursor in the future gets an error frame and the connection
// closes with a policy-violation status.
func TestSubscribeRepos_FutureCursor(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t)
	c, ctx := dial(t, s, "?cursor=999")
	f := readFrame(t, ctx, c)
	if f.Op != -1 || !bytes.Contains(f.Body, []byte("FutureCursor")) {
		t.Fatalf("got op %d %q", f.Op, f.Body)
	}
	_, _, err := c.Read(ctx)
	if websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
		t.Fatalf("close: %v", err)
	}
}

// Ensure a plain HTTP request to the firehose gets an XRPC error.
func TestSubscribeRepos_NotWebSocket(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t)
	status, body := s.Do(t, http.MethodGet, "com.atproto.sync.subscribeRepos", nil, nil, "")
	pdstest.MustError(t, status, body, http.StatusBadRequest, "InvalidRequest")
}
