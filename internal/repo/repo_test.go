package repo_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/atcrypto"
	atrepo "github.com/bluesky-social/indigo/atproto/repo"
	"github.com/bluesky-social/indigo/atproto/repo/mst"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"
	car "github.com/ipld/go-car"

	"stratus/internal/account"
	"stratus/internal/pdserr"
	"stratus/internal/repo"
	"stratus/internal/sqlite"
)

type fixedKey struct{ k atcrypto.PrivateKey }

func (f fixedKey) SigningKey(context.Context, syntax.DID) (atcrypto.PrivateKey, error) {
	return f.k, nil
}

// openSchemas accepts every record: these tests exercise the engine, not
// lexicon validation.
type openSchemas struct{}

func (openSchemas) HasRecord(syntax.NSID) bool                         { return false }
func (openSchemas) CheckRecordKey(syntax.NSID, syntax.RecordKey) error { return nil }
func (openSchemas) ValidateRecord(syntax.NSID, map[string]any) error   { return nil }

const testDID = syntax.DID("did:web:pds.test")

type env struct {
	db   *sqlite.DB
	svc  *repo.Service
	key  atcrypto.PrivateKey
	head repo.Head
}

func newEnv(tb testing.TB) *env { return newEnvWith(tb, sqlite.Options{}) }

func newEnvWith(tb testing.TB, opts sqlite.Options) *env {
	tb.Helper()
	ctx := context.Background()
	db, err := sqlite.OpenWith(ctx, filepath.Join(tb.TempDir(), "pds.sqlite"), opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	key, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		tb.Fatal(err)
	}
	if err := db.Accounts().Create(ctx, account.Account{DID: testDID, Handle: "alice.test", Status: account.Active, CreatedAt: time.Now()}); err != nil {
		tb.Fatal(err)
	}
	svc := repo.NewService(repo.Config{Store: db.Repos(), Schemas: openSchemas{}, Keys: fixedKey{key}})
	head, err := svc.Create(ctx, testDID, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return &env{db: db, svc: svc, key: key, head: head}
}

func post(i int) map[string]any {
	return map[string]any{"$type": "app.bsky.feed.post", "text": fmt.Sprintf("post %d", i), "createdAt": "2026-01-01T00:00:00Z"}
}

// verifyExport loads the exported CAR with indigo and checks signature, MST
// structure, and that the store holds exactly the blocks of the tree.
func verifyExport(t *testing.T, e *env, wantRecords int) {
	t.Helper()
	ctx := context.Background()
	var buf bytes.Buffer
	if err := e.svc.ExportCAR(ctx, testDID, "", &buf); err != nil {
		t.Fatalf("export: %v", err)
	}
	commit, r, err := atrepo.LoadRepoFromCAR(ctx, bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatalf("load car: %v", err)
	}
	pub, err := e.key.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := commit.VerifySignature(pub); err != nil {
		t.Fatalf("signature: %v", err)
	}
	if err := r.MST.Verify(); err != nil {
		t.Fatalf("mst verify: %v", err)
	}
	n := 0
	if err := r.MST.Walk(func(k []byte, v cid.Cid) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	if n != wantRecords {
		t.Fatalf("records in tree = %d, want %d", n, wantRecords)
	}
	// The CAR holds exactly the reachable blocks, and the store exactly the
	// commit and the records.
	reachable := map[cid.Cid]bool{}
	records := map[cid.Cid]bool{}
	var walk func(n *mst.Node)
	walk = func(n *mst.Node) {
		reachable[*n.CID] = true
		for _, en := range n.Entries {
			if en.Child != nil {
				walk(en.Child)
			}
			if en.Value != nil {
				reachable[*en.Value] = true
				records[*en.Value] = true
			}
		}
	}
	if _, err := r.MST.RootCID(); err != nil {
		t.Fatal(err)
	}
	walk(r.MST.Root)
	head, err := e.svc.Head(ctx, testDID)
	if err != nil {
		t.Fatal(err)
	}
	reachable[head.Commit] = true
	inCAR := map[cid.Cid]bool{}
	cr, err := car.NewCarReader(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	for {
		blk, err := cr.Next()
		if err != nil {
			break
		}
		if !reachable[blk.Cid()] {
			t.Errorf("export holds unreachable block %s", blk.Cid())
		}
		inCAR[blk.Cid()] = true
	}
	if len(inCAR) != len(reachable) {
		t.Fatalf("export holds %d blocks, tree has %d", len(inCAR), len(reachable))
	}
	stored, _, err := e.db.Repos().Stats(ctx, testDID)
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(len(records) + 1); stored != want {
		t.Fatalf("store holds %d blocks, want %d (commit + distinct records)", stored, want)
	}
}

func lastCommitEvent(t *testing.T, e *env) *comatproto.SyncSubscribeRepos_Commit {
	t.Helper()
	payload, err := e.db.LastEventPayload(context.Background(), "commit")
	if err != nil {
		t.Fatal(err)
	}
	var ev comatproto.SyncSubscribeRepos_Commit
	if err := ev.UnmarshalCBOR(bytes.NewReader(payload)); err != nil {
		t.Fatal(err)
	}
	return &ev
}

func TestService_ApplyWrites(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	rng := rand.New(rand.NewPCG(1, 2))
	coll := syntax.NSID("app.bsky.feed.post")
	live := map[syntax.RecordKey]bool{}
	var keys []syntax.RecordKey
	for i := 0; i < 400; i++ {
		var w repo.Write
		switch {
		case len(keys) > 0 && rng.IntN(4) == 0:
			k := keys[rng.IntN(len(keys))]
			if live[k] {
				w = repo.Write{Action: repo.Delete, Collection: coll, RKey: k}
				live[k] = false
			} else {
				w = repo.Write{Action: repo.Upsert, Collection: coll, RKey: k, Record: post(i)}
				live[k] = true
			}
		case len(keys) > 0 && rng.IntN(4) == 0:
			k := keys[rng.IntN(len(keys))]
			w = repo.Write{Action: repo.Upsert, Collection: coll, RKey: k, Record: post(i % 7)} // shared contents
			live[k] = true
		default:
			w = repo.Write{Action: repo.Create, Collection: coll, Record: post(i % 5)}
		}
		out, err := e.svc.ApplyWrites(ctx, testDID, []repo.Write{w}, repo.Options{})
		if err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		if w.Action == repo.Create {
			k := out.Results[0].URI.RecordKey()
			keys = append(keys, k)
			live[k] = true
		}
		ev := lastCommitEvent(t, e)
		if _, err := atrepo.VerifyCommitMessage(ctx, ev); err != nil {
			t.Fatalf("write %d (%v %s): commit event does not verify: %v; ops=%d", i, w.Action, w.RKey, err, len(ev.Ops))
		}
		if i%97 == 0 {
			// Drop the cached tree: the next write rebuilds it from the
			// record index and checks it against the signed commit.
			e.svc.Forget(testDID)
		}
		if i%50 == 0 {
			n := 0
			for _, v := range live {
				if v {
					n++
				}
			}
			verifyExport(t, e, n)
		}
	}
}

func TestService_ApplyWritesErrors(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	coll := syntax.NSID("app.bsky.feed.post")
	if _, err := e.svc.ApplyWrites(ctx, testDID, []repo.Write{{Action: repo.Create, Collection: coll, RKey: "a", Record: post(1)}}, repo.Options{}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		writes []repo.Write
		opts   repo.Options
		want   string
	}{
		{"Duplicate", []repo.Write{{Action: repo.Create, Collection: coll, RKey: "a", Record: post(2)}}, repo.Options{}, pdserr.RecordAlreadyExists},
		{"UpdateMissing", []repo.Write{{Action: repo.Update, Collection: coll, RKey: "zz", Record: post(2)}}, repo.Options{}, pdserr.RecordNotFound},
		{"SwapRecordMismatch", []repo.Write{{Action: repo.Upsert, Collection: coll, RKey: "a", Record: post(2), SwapRecord: &repo.Swap{}}}, repo.Options{}, pdserr.InvalidSwap},
		{"SwapCommitMismatch", []repo.Write{{Action: repo.Create, Collection: coll, Record: post(2)}}, repo.Options{SwapCommit: &e.head.Commit}, pdserr.InvalidSwap},
		{"WrongType", []repo.Write{{Action: repo.Create, Collection: coll, Record: map[string]any{"$type": "app.bsky.feed.like"}}}, repo.Options{}, pdserr.InvalidRecord},
		{"SecondWriteFails", []repo.Write{
			{Action: repo.Create, Collection: coll, RKey: "b", Record: post(3)},
			{Action: repo.Create, Collection: coll, RKey: "b", Record: post(4)},
		}, repo.Options{}, pdserr.RecordAlreadyExists},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, _ := e.svc.Head(ctx, testDID)
			_, err := e.svc.ApplyWrites(ctx, testDID, tt.writes, tt.opts)
			if !pdserr.Is(err, tt.want) {
				t.Fatalf("err = %v, want %s", err, tt.want)
			}
			after, _ := e.svc.Head(ctx, testDID)
			if !after.Commit.Equals(before.Commit) {
				t.Fatal("failed write moved the head")
			}
		})
	}
	verifyExport(t, e, 1)
}

func TestService_ConcurrentCreates(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := e.svc.ApplyWrites(ctx, testDID, []repo.Write{{Action: repo.Create, Collection: "app.bsky.feed.post", Record: post(i)}}, repo.Options{})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	verifyExport(t, e, 20)
}

// BenchmarkService_CreateRecord measures the whole commit path of one
// createRecord: validation, MST update, signing, and the SQLite transaction,
// with every commit fsynced (the default) and with relaxed sync.
func BenchmarkService_CreateRecord(b *testing.B) {
	for _, tc := range []struct {
		name string
		opts sqlite.Options
	}{{"sync=full", sqlite.Options{}}, {"sync=relaxed", sqlite.Options{RelaxedSync: true}}} {
		b.Run(tc.name, func(b *testing.B) {
			ctx := context.Background()
			e := newEnvWith(b, tc.opts)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				i++
				if _, err := e.svc.ApplyWrites(ctx, testDID, []repo.Write{{Action: repo.Create, Collection: "app.bsky.feed.post", Record: post(i)}}, repo.Options{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkService_ExportCAR measures a full getRepo export of a
// 2,500-record repository.
func BenchmarkService_ExportCAR(b *testing.B) {
	ctx := context.Background()
	e := newEnvWith(b, sqlite.Options{RelaxedSync: true})
	var writes []repo.Write
	for i := 0; i < 2500; i++ {
		writes = append(writes, repo.Write{Action: repo.Create, Collection: "app.bsky.feed.post", Record: post(i)})
		if len(writes) == repo.MaxWrites {
			if _, err := e.svc.ApplyWrites(ctx, testDID, writes, repo.Options{}); err != nil {
				b.Fatal(err)
			}
			writes = nil
		}
	}
	if _, err := e.svc.ApplyWrites(ctx, testDID, writes, repo.Options{}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	var n int64
	for b.Loop() {
		var buf bytes.Buffer
		if err := e.svc.ExportCAR(ctx, testDID, "", &buf); err != nil {
			b.Fatal(err)
		}
		n = int64(buf.Len())
	}
	b.SetBytes(n)
}

// Ensure a commit re-checks the account status inside its transaction, so
// a deactivation made elsewhere (another process, a stale cache) can never
// race a write through.
func TestService_WriteChecksStatusInTransaction(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	stale := repo.NewService(repo.Config{
		Store: e.db.Repos(), Schemas: openSchemas{}, Keys: fixedKey{e.key},
		CanWrite: func(context.Context, syntax.DID) error { return nil }, // believes the account is active
	})
	w := []repo.Write{{Action: repo.Create, Collection: "app.bsky.feed.post", Record: post(1)}}
	if _, err := stale.ApplyWrites(ctx, testDID, w, repo.Options{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.db.Accounts().SetStatus(ctx, testDID, account.Active, account.Deactivated, nil); err != nil {
		t.Fatal(err)
	}
	before, _ := stale.Head(ctx, testDID)
	_, err := stale.ApplyWrites(ctx, testDID, w, repo.Options{})
	if !pdserr.Is(err, pdserr.AccountDeactivated) {
		t.Fatalf("err = %v, want AccountDeactivated", err)
	}
	after, _ := stale.Head(ctx, testDID)
	if !after.Commit.Equals(before.Commit) {
		t.Fatal("write to a deactivated account moved the head")
	}
}

// Ensure an export needs one read connection, not two: with a pool of
// one it completes (the commit block comes from the export's own
// snapshot), so exports cannot wait on each other for connections.
func TestService_ExportNeedsOneReadConnection(t *testing.T) {
	e := newEnvWith(t, sqlite.Options{ReadConns: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for i := 0; i < 3; i++ {
		if _, err := e.svc.ApplyWrites(ctx, testDID, []repo.Write{{Action: repo.Create, Collection: "app.bsky.feed.post", Record: post(i)}}, repo.Options{}); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if err := e.svc.ExportCAR(ctx, testDID, "", &buf); err != nil {
		t.Fatalf("export with one read connection: %v", err)
	}
	if buf.Len() == 0 {
		t.Fatal("empty export")
	}
}
