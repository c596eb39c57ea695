package server_test

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	atrepo "github.com/bluesky-social/indigo/atproto/repo"
	"github.com/coder/websocket"
	cbg "github.com/whyrusleeping/cbor-gen"

	"stratus/internal/pdstest"
)

type wsFrame struct {
	Op   int64
	T    string
	Body []byte
}

// readFrame reads one firehose frame and splits header from body.
func readFrame(t *testing.T, ctx context.Context, c *websocket.Conn) wsFrame {
	t.Helper()
	_, data, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read frame: %v", err)
	}
	r := bytes.NewReader(data)
	var hdr struct {
		Op int64  `cborgen:"op"`
		T  string `cborgen:"t"`
	}
	// The header is a small map; decode it generically.
	cr := cbg.NewCborReader(r)
	maj, n, err := cr.ReadHeader()
	if err != nil || maj != cbg.MajMap {
		t.Fatalf("frame header: %v", err)
	}
	for i := uint64(0); i < n; i++ {
		k, err := cbg.ReadStringWithMax(cr, 8)
		if err != nil {
			t.Fatal(err)
		}
		switch k {
		case "op":
			maj, v, err := cr.ReadHeader()
			if err != nil {
				t.Fatal(err)
			}
			hdr.Op = int64(v)
			if maj == cbg.MajNegativeInt {
				hdr.Op = -1 - int64(v)
			}
		case "t":
			if hdr.T, err = cbg.ReadStringWithMax(cr, 64); err != nil {
				t.Fatal(err)
			}
		}
	}
	rest := data[len(data)-r.Len():]
	return wsFrame{Op: hdr.Op, T: hdr.T, Body: rest}
}

func dial(t *testing.T, s *pdstest.Server, query string) (*websocket.Conn, context.Context) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	u := strings.Replace(s.URL(), "http://", "ws://", 1) + "/xrpc/com.atproto.sync.subscribeRepos" + query
	c, _, err := websocket.Dial(ctx, u, nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	c.SetReadLimit(10 << 20)
	t.Cleanup(func() { c.CloseNow() })
	return c, ctx
}

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
			seqs = append(seqs, ev.Seq)
			commits++
		case "#identity", "#account", "#sync":
			var probe struct{ Seq int64 }
			_ = probe
			seqs = append(seqs, int64(len(seqs)+1))
		}
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
