package repo_test

import (
	"bytes"
	"context"
	"fmt"
	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"math/rand/v2"
	"testing"

	atrepo "github.com/bluesky-social/indigo/atproto/repo"
	"github.com/bluesky-social/indigo/atproto/repo/mst"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"stratus/internal/repo"
)

// Ensure commits stay canonical and invertible on small trees, where
// deleting the last keys of a layer shrinks the tree (a case indigo's Remove
// leaves with a stale root layer).
func TestService_SmallTreeChurn(t *testing.T) {
	ctx := context.Background()
	coll := syntax.NSID("app.bsky.feed.post")
	for run := 0; run < 40; run++ {
		e := newEnv(t)
		rng := rand.New(rand.NewPCG(uint64(run), 2))
		live := map[syntax.RecordKey]bool{}
		var keys []syntax.RecordKey
		var log []string
		for i := 0; i < 40; i++ {
			var w repo.Write
			switch {
			case len(keys) > 0 && rng.IntN(3) == 0:
				k := keys[rng.IntN(len(keys))]
				if live[k] {
					w = repo.Write{Action: repo.Delete, Collection: coll, RKey: k}
					live[k] = false
				} else {
					w = repo.Write{Action: repo.Upsert, Collection: coll, RKey: k, Record: post(i)}
					live[k] = true
				}
			case len(keys) > 0 && rng.IntN(3) == 0:
				k := keys[rng.IntN(len(keys))]
				w = repo.Write{Action: repo.Upsert, Collection: coll, RKey: k, Record: post(i % 7)}
				live[k] = true
			default:
				w = repo.Write{Action: repo.Create, Collection: coll, Record: post(i % 5)}
			}
			out, err := e.svc.ApplyWrites(ctx, testDID, []repo.Write{w}, repo.Options{})
			if err != nil {
				t.Fatal(err)
			}
			k := out.Results[0].URI.RecordKey()
			if w.Action == repo.Create {
				keys = append(keys, k)
				live[k] = true
			}
			log = append(log, w.Action.String()+" "+string(k)+" h="+string(rune('0'+mst.HeightForKey([]byte("app.bsky.feed.post/"+k.String())))))
			ev := lastCommitEvent(t, e)
			if _, err := atrepo.VerifyCommitMessage(ctx, ev); err != nil {
				for _, l := range log {
					t.Log(l)
				}
				t.Fatalf("run %d write %d: %v", run, i, err)
			}
		}
		n := 0
		for _, v := range live {
			if v {
				n++
			}
		}
		verifyExport(t, e, n)
	}
}

// Ensure random multi-write batches (creates, updates and deletes of the
// same small key set, so trees repeatedly empty and regrow) keep every
// commit invertible and the tree canonical: after each batch the cached
// tree is dropped and must rebuild from the record index to the signed
// root.
func TestService_BatchChurn(t *testing.T) {
	ctx := context.Background()
	coll := syntax.NSID("app.bsky.feed.post")
	// Mix keys of the bottom layer with keys of higher layers, so batches
	// empty and regrow the tree across layers.
	var keys []syntax.RecordKey
	low, high := 0, 0
	for i := 0; len(keys) < 3; i++ {
		k := syntax.RecordKey(fmt.Sprintf("k%d", i))
		if mst.HeightForKey([]byte(coll.String()+"/"+k.String())) > 0 {
			if high < 1 {
				keys, high = append(keys, k), high+1
			}
		} else if low < 2 {
			keys, low = append(keys, k), low+1
		}
	}
	for run := 0; run < 30; run++ {
		e := newEnv(t)
		rng := rand.New(rand.NewPCG(uint64(run), 7))
		live := map[syntax.RecordKey]bool{}
		for i := 0; i < 40; i++ {
			var writes []repo.Write
			liveBefore := fmt.Sprint(live)
			touched := map[syntax.RecordKey]bool{}
			for n := 1 + rng.IntN(4); n > 0; n-- {
				k := keys[rng.IntN(len(keys))]
				if touched[k] {
					continue
				}
				touched[k] = true
				if live[k] && rng.IntN(2) == 0 {
					writes = append(writes, repo.Write{Action: repo.Delete, Collection: coll, RKey: k})
					live[k] = false
				} else {
					writes = append(writes, repo.Write{Action: repo.Upsert, Collection: coll, RKey: k, Record: post(rng.IntN(1000))})
					live[k] = true
				}
			}
			out, err := e.svc.ApplyWrites(ctx, testDID, writes, repo.Options{})
			if err != nil {
				t.Fatalf("run %d batch %d: %v", run, i, err)
			}
			if out.Commit != nil {
				ev := lastCommitEvent(t, e)
				if _, err := atrepo.VerifyCommitMessage(ctx, ev); err != nil && !followedBySync(t, e, out) {
					var desc []string
					for _, w := range writes {
						desc = append(desc, fmt.Sprintf("%v %s h=%d", w.Action, w.RKey, mst.HeightForKey([]byte(coll.String()+"/"+w.RKey.String()))))
					}
					t.Fatalf("run %d batch %d %v (live before: %v): commit does not verify: %v", run, i, desc, liveBefore, err)
				}
			}
			e.svc.Forget(testDID)
			if _, _, err := e.svc.Stats(ctx, testDID); err != nil {
				t.Fatalf("run %d batch %d: repository no longer loads: %v", run, i, err)
			}
		}
		n := 0
		for _, v := range live {
			if v {
				n++
			}
		}
		verifyExport(t, e, n)
	}
}

// followedBySync reports whether the commit's events end with a #sync for
// it: the server's answer to commits indigo's verifier cannot invert.
func followedBySync(t *testing.T, e *env, out *repo.Outcome) bool {
	t.Helper()
	if len(out.Seq) != 2 {
		return false
	}
	payload, err := e.db.LastEventPayload(context.Background(), "sync")
	if err != nil {
		return false
	}
	var ev comatproto.SyncSubscribeRepos_Sync
	if err := ev.UnmarshalCBOR(bytes.NewReader(payload)); err != nil {
		return false
	}
	return ev.Rev == out.Commit.Rev.String()
}
