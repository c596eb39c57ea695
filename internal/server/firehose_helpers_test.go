package server_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/atdata"
	"github.com/coder/websocket"

	"stratus/internal/pdstest"
	"stratus/internal/sequencer"
)

// wsFrame is one firehose frame split into its header and body.
type wsFrame struct {
	Op   int64
	T    string
	Body []byte
	Raw  []byte // the whole message as received
}

// parseFrame splits a firehose message into its DAG-CBOR header, which
// must be a map holding op (and t for messages), and the body after it.
func parseFrame(data []byte) (wsFrame, error) {
	op, t, body, err := sequencer.SplitFrame(data)
	if err != nil {
		return wsFrame{}, err
	}
	if len(body) == 0 {
		return wsFrame{}, fmt.Errorf("frame %s has no body", t)
	}
	return wsFrame{Op: op, T: t, Body: body, Raw: data}, nil
}

// readFrame reads one firehose frame and splits header from body.
func readFrame(t *testing.T, ctx context.Context, c *websocket.Conn) wsFrame {
	t.Helper()
	typ, data, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read frame: %v", err)
	}
	if typ != websocket.MessageBinary {
		t.Fatalf("frame of type %v, want binary", typ)
	}
	f, err := parseFrame(data)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// seq returns the seq of a message frame.
func (f wsFrame) seq() (int64, error) {
	if f.Op != 1 {
		return 0, fmt.Errorf("error frame %s", f.Body)
	}
	r := bytes.NewReader(f.Body)
	switch f.T {
	case "#commit":
		var ev comatproto.SyncSubscribeRepos_Commit
		err := ev.UnmarshalCBOR(r)
		return ev.Seq, err
	case "#sync":
		var ev comatproto.SyncSubscribeRepos_Sync
		err := ev.UnmarshalCBOR(r)
		return ev.Seq, err
	case "#identity":
		var ev comatproto.SyncSubscribeRepos_Identity
		err := ev.UnmarshalCBOR(r)
		return ev.Seq, err
	case "#account":
		var ev comatproto.SyncSubscribeRepos_Account
		err := ev.UnmarshalCBOR(r)
		return ev.Seq, err
	}
	return 0, fmt.Errorf("frame %s carries no seq", f.T)
}

// mustSeq is seq that fails the test on error.
func (f wsFrame) mustSeq(t *testing.T) int64 {
	t.Helper()
	n, err := f.seq()
	if err != nil {
		t.Fatalf("frame %s: %v", f.T, err)
	}
	return n
}

// commit decodes a #commit frame.
func (f wsFrame) commit(t *testing.T) *comatproto.SyncSubscribeRepos_Commit {
	t.Helper()
	if f.Op != 1 || f.T != "#commit" {
		t.Fatalf("frame op %d %s, want #commit: %x", f.Op, f.T, truncateBytes(f.Body))
	}
	var ev comatproto.SyncSubscribeRepos_Commit
	if err := ev.UnmarshalCBOR(bytes.NewReader(f.Body)); err != nil {
		t.Fatalf("decode #commit: %v", err)
	}
	return &ev
}

// errorBody decodes the body of an error (op -1) or #info frame.
func (f wsFrame) errorBody(t *testing.T) (name, message string) {
	t.Helper()
	m, err := atdata.UnmarshalCBOR(f.Body)
	if err != nil {
		t.Fatalf("decode %s frame body: %v", f.T, err)
	}
	key := "error"
	if f.T == "#info" {
		key = "name"
	}
	name, _ = m[key].(string)
	message, _ = m["message"].(string)
	return name, message
}

func truncateBytes(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}

// wsURL is the firehose URL of s with a query ("" or "?cursor=...").
func wsURL(s *pdstest.Server, query string) string {
	return strings.Replace(s.URL(), "http://", "ws://", 1) + "/xrpc/com.atproto.sync.subscribeRepos" + query
}

// dialCtx connects to the firehose; safe to call from any goroutine.
func dialCtx(ctx context.Context, s *pdstest.Server, query string) (*websocket.Conn, error) {
	c, _, err := websocket.Dial(ctx, wsURL(s, query), nil)
	if err != nil {
		return nil, err
	}
	c.SetReadLimit(10 << 20)
	return c, nil
}

func dial(t *testing.T, s *pdstest.Server, query string) (*websocket.Conn, context.Context) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	c, err := dialCtx(ctx, s, query)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c, ctx
}

// subscribers returns how many firehose subscriptions s's hub holds.
func subscribers(s *pdstest.Server) int { return s.Server().Hub().Subscribers() }

// waitSubscribers waits until the hub of s holds n subscriptions: a
// subscriber without a cursor only sees events written after that.
func waitSubscribers(t *testing.T, s *pdstest.Server, n int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for subscribers(s) != n {
		if time.Now().After(deadline) {
			t.Fatalf("hub has %d subscribers, want %d", subscribers(s), n)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// collector reads a subscription in the background and records the seq of
// every frame, failing on anything but message frames with a seq.
type collector struct {
	c    *websocket.Conn
	mu   sync.Mutex
	seqs []int64
	revs []string // rev of each #commit, "" for other types
	err  error
	done chan struct{}
}

func collect(ctx context.Context, c *websocket.Conn) *collector {
	col := &collector{c: c, done: make(chan struct{})}
	go func() {
		defer close(col.done)
		for {
			_, data, err := c.Read(ctx)
			if err != nil {
				col.fail(err)
				return
			}
			f, err := parseFrame(data)
			if err != nil {
				col.fail(err)
				return
			}
			n, err := f.seq()
			if err != nil {
				col.fail(err)
				return
			}
			rev := ""
			if f.T == "#commit" {
				var ev comatproto.SyncSubscribeRepos_Commit
				if err := ev.UnmarshalCBOR(bytes.NewReader(f.Body)); err != nil {
					col.fail(err)
					return
				}
				rev = ev.Rev
			}
			col.mu.Lock()
			col.seqs = append(col.seqs, n)
			col.revs = append(col.revs, rev)
			col.mu.Unlock()
		}
	}()
	return col
}

func (col *collector) fail(err error) {
	col.mu.Lock()
	if col.err == nil {
		col.err = err
	}
	col.mu.Unlock()
}

// snapshot returns the seqs received so far and the read error, if any.
func (col *collector) snapshot() ([]int64, error) {
	col.mu.Lock()
	defer col.mu.Unlock()
	return append([]int64(nil), col.seqs...), col.err
}

// waitFor waits until the collector has received a frame with seq ≥ last
// and returns every seq received.
func (col *collector) waitFor(t *testing.T, last int64, timeout time.Duration) []int64 {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		seqs, err := col.snapshot()
		if len(seqs) > 0 && seqs[len(seqs)-1] >= last {
			return seqs
		}
		if err != nil {
			t.Fatalf("subscriber stopped after %d frames (last %v): %v", len(seqs), lastOf(seqs), err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("subscriber has %d frames (last %v), still waiting for seq %d", len(seqs), lastOf(seqs), last)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func lastOf(seqs []int64) any {
	if len(seqs) == 0 {
		return "none"
	}
	return seqs[len(seqs)-1]
}

// checkRun reports whether seqs is exactly from, from+1, ..., to.
func checkRun(seqs []int64, from, to int64) error {
	if int64(len(seqs)) != to-from+1 {
		return fmt.Errorf("got %d seqs (first %v, last %v), want %d..%d (%d)", len(seqs), firstOf(seqs), lastOf(seqs), from, to, to-from+1)
	}
	for i, n := range seqs {
		if n != from+int64(i) {
			return fmt.Errorf("seq #%d is %d, want %d (previous %v)", i, n, from+int64(i), prevOf(seqs, i))
		}
	}
	return nil
}

func firstOf(seqs []int64) any {
	if len(seqs) == 0 {
		return "none"
	}
	return seqs[0]
}

func prevOf(seqs []int64, i int) any {
	if i == 0 {
		return "none"
	}
	return seqs[i-1]
}
