package bench

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// xrpcStub answers the calls the client tests make: createRecord echoes
// the post's text in the URI, getRecord answers a record of the asked
// size (sent chunked when asked), and fail answers with an error.
func xrpcStub(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	switch r.URL.Path {
	case "/xrpc/com.atproto.repo.createRecord":
		var in struct {
			Record struct {
				Text string `json:"text"`
			} `json:"record"`
		}
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, `{"uri":"at://did:web:x/app.bsky.feed.post/%s","cid":"bafy","commit":{"cid":"c","rev":"r"}}`, strings.ReplaceAll(in.Record.Text, " ", "_"))
	case "/xrpc/com.atproto.repo.getRecord":
		n, _ := strconv.Atoi(r.URL.Query().Get("size"))
		body := `{"uri":"at://x/y/` + r.URL.Query().Get("rkey") + `","value":{"text":"` + strings.Repeat("v", n) + `"}}`
		if r.URL.Query().Has("chunked") {
			io.WriteString(w, body[:len(body)/2])
			w.(http.Flusher).Flush()
			io.WriteString(w, body[len(body)/2:])
			return
		}
		io.WriteString(w, body)
	default:
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"error":"InvalidRequest","message":"no such method"}`)
	}
}

// TestClientReusesConnection makes sequential calls of every kind the
// scenarios make, including failing ones, and expects them all on one
// connection: an answer not read to its end would cost a new connection
// (and its set-up, on the server too) for the next call.
func TestClientReusesConnection(t *testing.T) {
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(xrpcStub))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	r := &run{c: newClient(srv.URL, "", 4, time.Minute), did: "did:web:x"}
	defer r.c.http.CloseIdleConnections()
	ctx := t.Context()
	const n = 20
	for i := range n {
		out, err := r.create(ctx, CreateSeq, i)
		if want := fmt.Sprintf("pds_bench_%s_%d", CreateSeq, i); err != nil || rkeyOf(out.URI) != want {
			t.Fatalf("create %d: %+v, %v; want rkey %s", i, out, err, want)
		}
		q := url.Values{"rkey": {strconv.Itoa(i)}, "size": {strconv.Itoa(i * 300)}}
		if i%2 == 1 {
			q.Set("chunked", "1")
		}
		var rec struct {
			URI string `json:"uri"`
		}
		if err := r.c.get(ctx, "com.atproto.repo.getRecord", q, &rec); err != nil || rkeyOf(rec.URI) != strconv.Itoa(i) {
			t.Fatalf("getRecord %d: %+v, %v", i, rec, err)
		}
		ans, err := r.c.do(ctx, http.MethodPost, "com.atproto.repo.uploadBlob", nil, bytesType, []byte("blob"), maxJSONAnswer)
		var re *RequestError
		if !errors.As(err, &re) || re.Status != http.StatusBadRequest || re.Name != "InvalidRequest" || ans != nil {
			t.Fatalf("failing call: %v, %v", ans, err)
		}
	}
	if got := conns.Load(); got != 1 {
		t.Errorf("%d sequential calls took %d connections, want 1", 3*n, got)
	}
}

// TestClientHeaders checks the headers of calls made concurrently, which
// share their header maps (the race detector watches the sharing).
func TestClientHeaders(t *testing.T) {
	type seen struct{ method, contentType, auth, bypass string }
	var mu sync.Mutex
	var got []seen
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, seen{r.Method, r.Header.Get("Content-Type"), r.Header.Get("Authorization"), r.Header.Get("X-Ratelimit-Bypass")})
		mu.Unlock()
		io.WriteString(w, `{}`)
	}))
	defer srv.Close()
	c := newClient(srv.URL, "let-me-through", 4, time.Minute)
	defer c.http.CloseIdleConnections()
	ctx := t.Context()
	if err := c.post(ctx, "com.example.before", map[string]string{"a": "b"}, nil); err != nil {
		t.Fatal(err)
	}
	c.setToken("tok")
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 5 {
				if err := c.post(ctx, "com.example.post", json.RawMessage(`{}`), nil); err != nil {
					t.Error(err)
				}
				if err := c.get(ctx, "com.example.get", nil, nil); err != nil {
					t.Error(err)
				}
				if ans, err := c.do(ctx, http.MethodPost, "com.example.blob", nil, bytesType, []byte{1}, maxJSONAnswer); err != nil {
					t.Error(err)
				} else {
					release(ans)
				}
			}
		})
	}
	wg.Wait()
	want := map[seen]int{
		{"POST", jsonType, "", "let-me-through"}:            1,
		{"POST", jsonType, "Bearer tok", "let-me-through"}:  20,
		{"GET", "", "Bearer tok", "let-me-through"}:         20,
		{"POST", bytesType, "Bearer tok", "let-me-through"}: 20,
	}
	counts := map[seen]int{}
	for _, s := range got {
		counts[s]++
	}
	if fmt.Sprint(counts) != fmt.Sprint(want) {
		t.Errorf("headers seen %v, want %v", counts, want)
	}
}

// TestClientAnswers reads answers of changing sizes through the reused
// buffers, and ones over the limit.
func TestClientAnswers(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		if r.URL.Query().Has("chunked") {
			w.(http.Flusher).Flush()
		}
		w.Write(bytes.Repeat([]byte{byte('a' + n%26)}, n))
	}))
	defer srv.Close()
	c := newClient(srv.URL, "", 4, time.Minute)
	defer c.http.CloseIdleConnections()
	for _, n := range []int{100_000, 3, 70_000, 0, 5000, 1000} {
		for _, chunked := range []bool{false, true} {
			q := url.Values{"n": {strconv.Itoa(n)}}
			if chunked {
				q.Set("chunked", "1")
			}
			ans, err := c.do(t.Context(), http.MethodGet, "com.example.size", q, "", nil, 80_000)
			if n > 80_000 {
				if err == nil || !strings.Contains(err.Error(), "answer larger than 80000 bytes") {
					t.Errorf("%d bytes, limit 80,000: %v", n, err)
				}
				continue
			}
			if err != nil {
				t.Fatalf("%d bytes: %v", n, err)
			}
			if !bytes.Equal(ans.Bytes(), bytes.Repeat([]byte{byte('a' + n%26)}, n)) {
				t.Errorf("%d bytes (chunked %v): got %d other bytes", n, chunked, ans.Len())
			}
			release(ans)
		}
	}
}

// TestClientTimeout has a server stall halfway through its answer: the
// call's time bound covers reading the answer, not only its headers.
func TestClientTimeout(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100")
		io.WriteString(w, `{"uri":`)
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	}))
	defer srv.Close()
	c := newClient(srv.URL, "", 4, 200*time.Millisecond)
	defer c.http.CloseIdleConnections()
	start := time.Now()
	err := c.get(t.Context(), "com.example.stall", nil, nil)
	if err == nil || !strings.Contains(err.Error(), "deadline exceeded") || time.Since(start) > 5*time.Second {
		t.Errorf("after %s: %v, want the deadline exceeded after 200ms", time.Since(start), err)
	}
}
