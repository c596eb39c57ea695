package repo_test

import (
	"context"
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
