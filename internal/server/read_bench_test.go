package server_test

import (
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"stratus/internal/pdstest"
)

// BenchmarkGetRecord measures com.atproto.repo.getRecord over HTTP, by
// concurrent clients (GOMAXPROCS × 4) reading 500 records of the account,
// named by DID as clients do.
//
//	go test -run '^$' -bench BenchmarkGetRecord ./internal/server/
func BenchmarkGetRecord(b *testing.B) {
	s := pdstest.NewServer(b, pdstest.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	tok := s.AdminToken()
	var writes []map[string]any
	for i := range 500 {
		writes = append(writes, map[string]any{"$type": "com.atproto.repo.applyWrites#create",
			"collection": "app.bsky.feed.post", "value": pdstest.Post("bench " + string(rune('a'+i%26)))})
	}
	var keys []string
	for i := 0; i < len(writes); i += 200 {
		var out struct {
			Results []struct {
				URI string `json:"uri"`
			} `json:"results"`
		}
		s.Call(b, http.MethodPost, "com.atproto.repo.applyWrites", nil,
			map[string]any{"repo": s.DID(), "writes": writes[i:min(i+200, len(writes))]}, tok, &out)
		for _, r := range out.Results {
			keys = append(keys, r.URI[strings.LastIndexByte(r.URI, '/')+1:])
		}
	}
	client := s.Client()
	base := s.URL() + "/xrpc/com.atproto.repo.getRecord?"
	var next atomic.Int64
	b.SetParallelism(4)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			k := keys[next.Add(1)%int64(len(keys))]
			resp, err := client.Get(base + url.Values{"repo": {s.DID()}, "collection": {"app.bsky.feed.post"}, "rkey": {k}}.Encode())
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Errorf("getRecord: %d", resp.StatusCode)
				return
			}
		}
	})
}
