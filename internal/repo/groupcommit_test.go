package repo_test

import (
	"context"
	"sync"
	"testing"

	"github.com/bluesky-social/indigo/atproto/atdata"
	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"

	"stratus/internal/pdserr"
	"stratus/internal/repo"
	"stratus/internal/sqlite"
)

// postWithMissingBlob is a record the store refuses inside the commit's
// transaction: it references a blob the server does not hold.
func postWithMissingBlob(t testing.TB, i int) map[string]any {
	t.Helper()
	c, err := cid.NewPrefixV1(cid.Raw, multihash.SHA2_256).Sum([]byte{byte(i), byte(i >> 8)})
	if err != nil {
		t.Fatal(err)
	}
	rec := post(i)
	rec["image"] = atdata.Blob{Ref: atdata.CIDLink(c), MimeType: "image/png", Size: 10}
	return rec
}

// Concurrent writers to one account share transactions and build on
// commits that are not yet durable. A commit refused inside the
// transaction must fail alone: writes queued behind it, built on it, are
// rebuilt and land, and the repository ends exactly as the successful
// writes leave it.
func TestService_GroupCommitRefusalFailsAlone(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	const writers, each = 6, 15
	type result struct {
		bad bool
		out *repo.Outcome
		err error
	}
	results := make(chan result, writers*each)
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < each; j++ {
				i := w*each + j
				bad := i%4 == 1
				rec := post(i)
				if bad {
					rec = postWithMissingBlob(t, i)
				}
				out, err := e.svc.ApplyWrites(ctx, testDID, []repo.Write{{Action: repo.Create, Collection: "app.bsky.feed.post", Record: rec}}, repo.Options{})
				results <- result{bad, out, err}
			}
		}()
	}
	wg.Wait()
	close(results)
	good := 0
	seen := map[int64]bool{}
	for r := range results {
		if r.bad {
			if !pdserr.Is(r.err, pdserr.BlobNotFound) {
				t.Fatalf("write with a missing blob: err = %v, want BlobNotFound", r.err)
			}
			continue
		}
		if r.err != nil {
			t.Fatalf("good write failed: %v", r.err)
		}
		if len(r.out.Seq) != 1 || seen[r.out.Seq[0]] {
			t.Fatalf("seqs %v: want one, unused", r.out.Seq)
		}
		seen[r.out.Seq[0]] = true
		good++
	}
	verifyExport(t, e, good)
	// What the engine holds in memory is what storage holds.
	if err := e.svc.Verify(ctx, testDID); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkService_CreateRecordConcurrent is BenchmarkService_CreateRecord
// with four writers on one account, whose commits share transactions.
func BenchmarkService_CreateRecordConcurrent(b *testing.B) {
	for _, tc := range []struct {
		name string
		opts sqlite.Options
	}{{"sync=full", sqlite.Options{}}, {"sync=relaxed", sqlite.Options{RelaxedSync: true}}} {
		b.Run(tc.name, func(b *testing.B) {
			ctx := context.Background()
			e := newEnvWith(b, tc.opts)
			b.ReportAllocs()
			b.SetParallelism(4)
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					i++
					if _, err := e.svc.ApplyWrites(ctx, testDID, []repo.Write{{Action: repo.Create, Collection: "app.bsky.feed.post", Record: post(i)}}, repo.Options{}); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
