package cli_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"stratus/internal/cli"
)

// Ensure request-crawl posts the server's hostname to every relay given,
// reports each, and fails when one refuses.
func TestRequestCrawl(t *testing.T) {
	var mu sync.Mutex
	var got []string
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var in struct{ Hostname string }
		json.Unmarshal(b, &in)
		mu.Lock()
		got = append(got, r.URL.Path+" "+in.Hostname)
		mu.Unlock()
		w.Write([]byte("{}"))
	}))
	defer ok.Close()
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, `{"error":"InvalidRequest","message":"no"}`, http.StatusBadRequest)
	}))
	defer bad.Close()

	dir := t.TempDir()
	run := func(args ...string) (int, string, string) {
		var out, errb strings.Builder
		code := cli.Main(context.Background(), args, cli.IO{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }})
		return code, out.String(), errb.String()
	}
	if code, _, errs := run("init", "--data-dir", dir, "--hostname", "pds.test", "--handle", "alice.test", "--yes"); code != 0 {
		t.Fatalf("init: %d %s", code, errs)
	}
	code, out, errs := run("request-crawl", "--data-dir", dir, "--relay", ok.URL)
	if code != 0 || !strings.Contains(out, "crawl of pds.test requested") {
		t.Fatalf("request-crawl: %d %q %q", code, out, errs)
	}
	if len(got) != 1 || got[0] != "/xrpc/com.atproto.sync.requestCrawl pds.test" {
		t.Fatalf("relay saw %v", got)
	}
	code, _, errs = run("request-crawl", "--data-dir", dir, "--relay", ok.URL, "--relay", bad.URL)
	if code != 1 || !strings.Contains(errs, bad.URL) {
		t.Fatalf("with a refusing relay: %d %q", code, errs)
	}
	if code, _, _ := run("request-crawl", "--data-dir", dir); code != 2 {
		t.Fatalf("without relays: exit %d, want 2", code)
	}
}
