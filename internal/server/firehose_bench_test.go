package server_test

import (
	"bytes"
	"context"
	"fmt"
	"hash/maphash"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	gorilla "github.com/gorilla/websocket"

	"stratus/internal/pdstest"
)

// BenchmarkFirehoseFanout measures sequential createRecord calls over HTTP
// with 0, 1 and 100 live firehose subscribers attached, each reading in
// its own goroutine. It reports writes/s and, with subscribers, the
// delivery latency from just before a write's request to the moment each
// subscriber receives the commit with that rev (p50 and p99 over every
// subscriber and write).
//
//	go test -run '^$' -bench BenchmarkFirehoseFanout -benchtime=300x ./internal/server/
func BenchmarkFirehoseFanout(b *testing.B) {
	for _, subs := range []int{0, 1, 100} {
		b.Run(fmt.Sprintf("subscribers=%d", subs), func(b *testing.B) {
			benchFanout(b, subs)
		})
	}
}

// delivery is one frame a subscriber received: its bytes are kept by the
// first subscriber only, the others keep a hash of them, which is enough
// to check they received the same frames in the same order.
type delivery struct {
	data []byte
	hash uint64
	at   time.Time
}

func benchFanout(b *testing.B, subs int) {
	s := pdstest.NewServer(b, pdstest.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	got := make([][]delivery, subs)
	counts := make([]atomic.Int64, subs)
	seed := maphash.MakeSeed()
	var wg sync.WaitGroup
	for i := 0; i < subs; i++ {
		// gorilla/websocket is what relays built on indigo read the
		// firehose with; its reads cost the subscriber little, so the
		// figure shows the server's fan-out cost rather than the test
		// client's on the shared cores.
		c, _, err := gorilla.DefaultDialer.DialContext(ctx, wsURL(s, ""), nil)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		context.AfterFunc(ctx, func() { c.Close() })
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf bytes.Buffer
			for {
				_, r, err := c.NextReader()
				if err != nil {
					return
				}
				buf.Reset()
				_, err = buf.ReadFrom(r)
				at := time.Now()
				if err != nil {
					return
				}
				// Decoding waits until the writes are done, and only the
				// first subscriber keeps the bytes, so that the subscribers
				// (in this process) take little CPU from the server while
				// it is measured.
				d := delivery{hash: maphash.Bytes(seed, buf.Bytes()), at: at}
				if i == 0 {
					d.data = bytes.Clone(buf.Bytes())
				}
				got[i] = append(got[i], d)
				counts[i].Add(1)
			}
		}()
	}
	deadline := time.Now().Add(30 * time.Second)
	for s.Server().Hub().Subscribers() != subs {
		if time.Now().After(deadline) {
			b.Fatalf("%d subscribers, want %d", s.Server().Hub().Subscribers(), subs)
		}
		time.Sleep(time.Millisecond)
	}

	sent := make(map[string]time.Time, b.N)
	body := obj{"repo": s.DID(), "collection": unknownColl, "record": thing(0)}
	tok := s.AdminToken()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		status, resp := s.Do(b, http.MethodPost, createRecord, nil, body, tok)
		if status != http.StatusOK {
			b.Fatalf("createRecord: %d %s", status, resp)
		}
		var w writeOut
		decode(b, resp, &w)
		sent[w.Commit.Rev] = t0
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "writes/s")
	if subs == 0 {
		return
	}

	// Wait until every subscriber has every commit, then stop them.
	for {
		done := true
		for i := range counts {
			if counts[i].Load() < int64(b.N) {
				done = false
			}
		}
		if done || time.Now().After(deadline.Add(time.Minute)) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	wg.Wait()

	// The first subscriber's frames name the commits; every other
	// subscriber must have received exactly the same frames in order.
	revs := make([]string, len(got[0]))
	for k, d := range got[0] {
		f, err := parseFrame(d.data)
		if err != nil || f.T != "#commit" {
			b.Fatalf("frame %d: %s: %v", k, f.T, err)
		}
		var ev comatproto.SyncSubscribeRepos_Commit
		if err := ev.UnmarshalCBOR(bytes.NewReader(f.Body)); err != nil {
			b.Fatal(err)
		}
		revs[k] = ev.Rev
	}
	var lat []float64
	for i := range got {
		if len(got[i]) != len(got[0]) {
			b.Fatalf("subscriber %d received %d frames, the first %d", i, len(got[i]), len(got[0]))
		}
		n := 0
		for k, d := range got[i] {
			if d.hash != got[0][k].hash {
				b.Fatalf("subscriber %d: frame %d differs from the first subscriber's", i, k)
			}
			if t0, ok := sent[revs[k]]; ok {
				lat = append(lat, float64(d.at.Sub(t0))/float64(time.Millisecond))
				n++
			}
		}
		if n != b.N {
			b.Fatalf("subscriber %d received %d of %d commits", i, n, b.N)
		}
	}
	slices.Sort(lat)
	b.ReportMetric(lat[len(lat)/2], "p50-delivery-ms")
	b.ReportMetric(lat[len(lat)*99/100], "p99-delivery-ms")
}
