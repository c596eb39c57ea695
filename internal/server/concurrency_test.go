package server_test

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"stratus/internal/pdstest"
)

func TestConcurrentCreates(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t)
	const n = 10
	type answer struct {
		status int
		body   []byte
	}
	answers := make([]answer, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			st, b := s.Do(t, post, createRecord, nil, obj{"repo": s.DID(), "collection": postColl, "record": pdstest.Post(fmt.Sprintf("parallel %d", i))}, s.AdminToken())
			answers[i] = answer{st, b}
		}()
	}
	close(start)
	wg.Wait()

	uris := map[string]bool{}
	revs := map[string]bool{}
	for i, a := range answers {
		if a.status != http.StatusOK {
			t.Errorf("create %d: %d %s", i, a.status, a.body)
			continue
		}
		var w writeOut
		decode(t, a.body, &w)
		if uris[w.URI] {
			t.Errorf("URI %s returned twice", w.URI)
		}
		uris[w.URI] = true
		if w.Commit == nil || revs[w.Commit.Rev] {
			t.Errorf("commit %+v missing or repeated", w.Commit)
		} else {
			revs[w.Commit.Rev] = true
		}
	}
	if len(uris) != n {
		t.Fatalf("%d distinct URIs, want %d", len(uris), n)
	}
	all := listAll(t, s, postColl, 100, false)
	if len(all) != n {
		t.Errorf("listRecords shows %d records, want %d", len(all), n)
	}
	for _, r := range all {
		if !uris[r.URI] {
			t.Errorf("listed %s was never returned by createRecord", r.URI)
		}
	}
	snap := verifyFullRepo(t, s.DID(), s.SigningKey(), fetchRepo(t, s))
	if len(snap.records) != n {
		t.Errorf("MST holds %d records, want %d", len(snap.records), n)
	}
}

// TestCreateDeleteRace has writers put, create and delete the same few
// record keys while readers export, prove and list. Nothing may fail with
// a 5xx, and the final repository must verify and agree with the index.
func TestCreateDeleteRace(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t)
	tok := s.AdminToken()
	const (
		coll       = "com.example.raced"
		writers    = 4
		readers    = 2
		opsEach    = 60
		timeBudget = 2 * time.Second
	)
	keys := []string{"k0", "k1", "k2", "k3", "k4"}
	deadline := time.Now().Add(timeBudget)

	var (
		mu       sync.Mutex
		statuses = map[string]map[int]int{} // op -> status -> count
		failures []string
		commits  atomic.Int64
	)
	record := func(op string, status int, body []byte) {
		mu.Lock()
		defer mu.Unlock()
		if statuses[op] == nil {
			statuses[op] = map[int]int{}
		}
		statuses[op][status]++
		if status >= 500 && len(failures) < 10 {
			failures = append(failures, fmt.Sprintf("%s: %d %s", op, status, truncate(body)))
		}
		if status != http.StatusOK {
			if _, err := pdstest.ParseError(body); err != nil && len(failures) < 10 {
				failures = append(failures, fmt.Sprintf("%s: %d without an error envelope: %v", op, status, err))
			}
		}
	}

	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 42))
			for i := 0; i < opsEach && time.Now().Before(deadline); i++ {
				k := keys[rng.IntN(len(keys))]
				var op string
				var st int
				var b []byte
				switch rng.IntN(4) {
				case 0:
					op = "put"
					st, b = s.Do(t, post, putRecord, nil, obj{"repo": s.DID(), "collection": coll, "rkey": k, "record": obj{"w": w, "i": i}}, tok)
				case 1:
					op = "delete"
					st, b = s.Do(t, post, deleteRecord, nil, obj{"repo": s.DID(), "collection": coll, "rkey": k}, tok)
				case 2:
					op = "create"
					st, b = s.Do(t, post, createRecord, nil, obj{"repo": s.DID(), "collection": coll, "rkey": k, "record": obj{"w": w, "i": i}}, tok)
				default:
					op = "applyWrites"
					k2 := keys[rng.IntN(len(keys))]
					st, b = s.Do(t, post, applyWrites, nil, obj{"repo": s.DID(), "writes": []obj{
						{"$type": awCreate, "collection": coll, "value": obj{"w": w, "i": i}},
						{"$type": awDelete, "collection": coll, "rkey": k2},
					}}, tok)
				}
				if st == http.StatusOK {
					commits.Add(1)
				}
				record(op, st, b)
			}
		}()
	}
	stop := make(chan struct{})
	var rwg sync.WaitGroup
	for r := range readers {
		rwg.Add(1)
		go func() {
			defer rwg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				switch (i + r) % 3 {
				case 0:
					st, b := s.Do(t, get, getRepo, q("did", s.DID()), nil, "")
					record("getRepo", st, b)
					if st == http.StatusOK {
						// Every export taken mid-race is a complete, signed
						// repository.
						verifyFullRepo(t, s.DID(), s.SigningKey(), b)
					}
				case 1:
					st, b := s.Do(t, get, syncGetRecord, q("did", s.DID(), "collection", coll, "rkey", keys[i%len(keys)]), nil, "")
					record("sync.getRecord", st, b)
				default:
					st, b := s.Do(t, get, listRecords, q("repo", s.DID(), "collection", coll), nil, "")
					record("listRecords", st, b)
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	rwg.Wait()

	t.Logf("answers by operation and status: %v (%d successful writes)", statuses, commits.Load())
	for _, f := range failures {
		t.Error(f)
	}
	for op, byStatus := range statuses {
		for st, n := range byStatus {
			if st >= 500 {
				t.Errorf("%s answered %d %d times", op, st, n)
			}
		}
	}

	snap := verifyFullRepo(t, s.DID(), s.SigningKey(), fetchRepo(t, s))
	if h := head(t, s); snap.commitCID.String() != h.CID {
		t.Errorf("export root %s, head %s", snap.commitCID, h.CID)
	}
	listed := listAll(t, s, coll, 100, false)
	inMST := 0
	for p := range snap.records {
		if len(p) > len(coll) && p[:len(coll)] == coll {
			inMST++
		}
	}
	if len(listed) != inMST {
		t.Errorf("listRecords shows %d records, MST holds %d", len(listed), inMST)
	}
	for _, r := range listed {
		if c, ok := snap.records[pathOf(t, r.URI)]; !ok || c.String() != r.CID {
			t.Errorf("listRecords %s %s, MST has %v", r.URI, r.CID, c)
		}
	}
	// The engine's in-memory tree matches storage: a further write works
	// and the repository still verifies after a restart.
	s.CreateRecord(t, coll, "", obj{"after": true})
	s.Restart(t)
	s.CreateRecord(t, coll, "", obj{"after-restart": true})
	verifyFullRepo(t, s.DID(), s.SigningKey(), fetchRepo(t, s))
}

// TestGetRepoDuringWrites exports the repository while a writer commits
// continuously. Every export must succeed and verify: an export started
// before a commit must not fail because the commit replaced the head.
func TestGetRepoDuringWrites(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t)
	seedThings(t, s, unknownColl, 50)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			st, b := s.Do(t, post, createRecord, nil, obj{"repo": s.DID(), "collection": unknownColl, "record": thing(i)}, s.AdminToken())
			if st != http.StatusOK {
				t.Errorf("write: %d %s", st, b)
				return
			}
		}
	}()
	const exports = 90
	var failed []string
	var rwg sync.WaitGroup
	var mu sync.Mutex
	for r := range 3 {
		rwg.Add(1)
		go func() {
			defer rwg.Done()
			for range exports / 3 {
				st, b := s.Do(t, get, getRepo, q("did", s.DID()), nil, "")
				if st != http.StatusOK {
					mu.Lock()
					failed = append(failed, fmt.Sprintf("reader %d: %d %s", r, st, truncate(b)))
					mu.Unlock()
					continue
				}
				verifyFullRepo(t, s.DID(), s.SigningKey(), b)
			}
		}()
	}
	rwg.Wait()
	close(stop)
	wg.Wait()
	if len(failed) > 0 {
		t.Errorf("%d of %d exports failed during writes; first: %s", len(failed), exports, failed[0])
	}
}

// TestDeactivateDuringWrites deactivates the account while writers run. A
// write sent after deactivateAccount answered must be refused, and every
// write acknowledged must be in the repository.
func TestDeactivateDuringWrites(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t)
	tok := s.AdminToken()
	var deactivated atomic.Bool
	var mu sync.Mutex
	acked := map[string]string{}
	var wg sync.WaitGroup
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				after := deactivated.Load()
				st, b := s.Do(t, post, createRecord, nil, obj{"repo": s.DID(), "collection": unknownColl, "record": obj{"w": w, "i": i}}, tok)
				switch {
				case st == http.StatusOK:
					if after {
						t.Errorf("write sent after deactivation was accepted: %s", b)
					}
					var out writeOut
					decode(t, b, &out)
					mu.Lock()
					acked[out.URI] = out.CID
					mu.Unlock()
				case st == http.StatusForbidden:
					pdstest.MustError(t, st, b, http.StatusForbidden, "AccountDeactivated")
					if after {
						return
					}
				default:
					t.Errorf("write: %d %s", st, b)
					return
				}
			}
		}()
	}
	time.Sleep(100 * time.Millisecond)
	s.Call(t, post, deactivateAccount, nil, nil, tok, nil)
	deactivated.Store(true)
	wg.Wait()

	snap := verifyFullRepo(t, s.DID(), s.SigningKey(), fetchRepo(t, s))
	if len(snap.records) != len(acked) {
		t.Errorf("repository holds %d records, %d writes were acknowledged", len(snap.records), len(acked))
	}
	for uri, c := range acked {
		if got := snap.records[pathOf(t, uri)]; got.String() != c {
			t.Errorf("acknowledged %s (%s) not in the repository", uri, c)
		}
	}
	t.Logf("%d writes acknowledged before deactivation", len(acked))
}
