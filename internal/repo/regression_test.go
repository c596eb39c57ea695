package repo_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	atrepo "github.com/bluesky-social/indigo/atproto/repo"
	"github.com/bluesky-social/indigo/atproto/repo/mst"
	"github.com/bluesky-social/indigo/atproto/syntax"

	"stratus/internal/repo"
)

func findKey(coll string, h int, skip string) syntax.RecordKey {
	for i := 0; ; i++ {
		k := fmt.Sprintf("k%d", i)
		if k != skip && mst.HeightForKey([]byte(coll+"/"+k)) == h {
			return syntax.RecordKey(k)
		}
	}
}

// Ensure a batch that deletes the only (higher-layer) record and creates a
// lower-layer one keeps the tree canonical, so the repository still loads
// from its record index afterwards.
func TestService_DeleteLastThenCreateInOneBatch(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	coll := syntax.NSID("app.bsky.feed.post")
	hi := findKey(coll.String(), 1, "")
	lo := findKey(coll.String(), 0, "")
	if _, err := e.svc.ApplyWrites(ctx, testDID, []repo.Write{{Action: repo.Create, Collection: coll, RKey: hi, Record: post(1)}}, repo.Options{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.ApplyWrites(ctx, testDID, []repo.Write{
		{Action: repo.Delete, Collection: coll, RKey: hi},
		{Action: repo.Create, Collection: coll, RKey: lo, Record: post(2)},
	}, repo.Options{}); err != nil {
		t.Fatal(err)
	}
	ev := lastCommitEvent(t, e)
	if _, err := atrepo.VerifyCommitMessage(ctx, ev); err != nil {
		t.Errorf("commit event does not verify: %v", err)
	}
	e.svc.Forget(testDID)
	var buf bytes.Buffer
	if err := e.svc.ExportCAR(ctx, testDID, "", &buf); err != nil {
		t.Fatalf("repository no longer loads: %v", err)
	}
}

// Ensure SyncCAR never reads a commit block that a concurrent commit has
// just replaced and deleted.
func TestService_SyncCARDuringWrites(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	coll := syntax.NSID("app.bsky.feed.post")
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 300; i++ {
			if _, err := e.svc.ApplyWrites(ctx, testDID, []repo.Write{{Action: repo.Create, Collection: coll, Record: post(i)}}, repo.Options{}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for {
		select {
		case <-done:
			return
		default:
		}
		if _, _, err := e.svc.SyncCAR(ctx, testDID); err != nil {
			t.Fatalf("SyncCAR during writes: %v", err)
		}
	}
}
