package server_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/events"
	"github.com/bluesky-social/indigo/events/schedulers/sequential"
	"github.com/gorilla/websocket"

	"stratus/internal/pdstest"
)

// Ensure indigo's own firehose consumer decodes the stream: replay from 0
// delivers the genesis events and every commit with the right seqs.
func TestSubscribeRepos_IndigoConsumer(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t)
	for i := 0; i < 3; i++ {
		s.CreateRecord(t, "app.bsky.feed.post", "", map[string]any{"text": "hi", "createdAt": "2026-01-01T00:00:00Z"})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	u := strings.Replace(s.URL(), "http://", "ws://", 1) + "/xrpc/com.atproto.sync.subscribeRepos?cursor=0"
	conn, _, err := websocket.DefaultDialer.DialContext(ctx, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var seqs []int64
	kinds := map[string]int{}
	done := make(chan struct{})
	record := func(kind string, seq int64) {
		mu.Lock()
		defer mu.Unlock()
		seqs = append(seqs, seq)
		kinds[kind]++
		if len(seqs) == 6 {
			close(done)
		}
	}
	cb := &events.RepoStreamCallbacks{
		RepoCommit:   func(e *comatproto.SyncSubscribeRepos_Commit) error { record("commit", e.Seq); return nil },
		RepoSync:     func(e *comatproto.SyncSubscribeRepos_Sync) error { record("sync", e.Seq); return nil },
		RepoIdentity: func(e *comatproto.SyncSubscribeRepos_Identity) error { record("identity", e.Seq); return nil },
		RepoAccount:  func(e *comatproto.SyncSubscribeRepos_Account) error { record("account", e.Seq); return nil },
	}
	go events.HandleRepoStream(ctx, conn, sequential.NewScheduler("test", cb.EventHandler), nil)
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatalf("indigo consumer got %v", seqs)
	}
	mu.Lock()
	defer mu.Unlock()
	for i, seq := range seqs {
		if seq != int64(i+1) {
			t.Fatalf("seqs %v, want 1..6", seqs)
		}
	}
	if kinds["commit"] != 3 || kinds["identity"] != 1 || kinds["account"] != 1 || kinds["sync"] != 1 {
		t.Fatalf("event kinds %v", kinds)
	}
}
