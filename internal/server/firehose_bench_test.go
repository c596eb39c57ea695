package server_test

import (
	"bytes"
	"context"
	"fmt"
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

type delivery struct {
	data []byte
	at   time.Time
}

func benchFanout(b *testing.B, subs int) {
	s := pdstest.NewServer(b, pdstest.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	got := make([][]delivery, subs)
	counts := make([]atomic.Int64, subs)
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
				// Decoding waits until the writes are done, so that the
				// subscribers (in this process) take little CPU from the
				// server while it is measured.
				got[i] = append(got[i], delivery{data: bytes.Clone(buf.Bytes()), at: at})
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

	var lat []float64
	for i := range got {
		n := 0
		for _, d := range got[i] {
			f, err := parseFrame(d.data)
			if err != nil || f.T != "#commit" {
				b.Fatalf("subscriber %d: frame %s: %v", i, f.T, err)
			}
			var ev comatproto.SyncSubscribeRepos_Commit
			if err := ev.UnmarshalCBOR(bytes.NewReader(f.Body)); err != nil {
				b.Fatal(err)
			}
			if t0, ok := sent[ev.Rev]; ok {
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
