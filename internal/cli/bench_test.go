package cli_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"stratus/internal/bench"
	"stratus/internal/cli"
	"stratus/internal/pdstest"
)

// asPDS makes the test binary behave as the pds binary when set, so that
// `pds bench --local` (which starts its own executable as the server)
// can run inside tests.
const asPDS = "STRATUS_CLI_TEST_AS_PDS"

func TestMain(m *testing.M) {
	// The test binary stands in for pds when a test asks it to, and as
	// the firehose subscribers' process that pds bench starts (it runs
	// its own executable).
	if os.Getenv(asPDS) == "1" || (len(os.Args) > 1 && os.Args[1] == "bench-subscribers") {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		code := cli.Main(ctx, os.Args[1:], cli.IO{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv})
		stop()
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// standIn sits in front of a test server, proxying everything but the
// method named in fail, which it answers with 500.
func newStandIn(t *testing.T, s *pdstest.Server, fail string) *httptest.Server {
	t.Helper()
	target, err := url.Parse(s.URL())
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	si := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/xrpc/"+fail {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusInternalServerError)
			io.WriteString(w, `{"error":"InternalServerError","message":"stand-in failure"}`)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(si.Close)
	return si
}

// tinyCounts are scenario flags that keep a run to a second or so.
var tinyCounts = []string{"--warmup", "2", "--records", "4", "--writers", "2", "--per-writer", "3", "--readers", "2",
	"--read-time", "150ms", "--max-reads", "40", "--exports", "2", "--subscribers", "3", "--blobs", "2",
	"--blob-size", "3000", "--batches", "2", "--batch-size", "10"}

func benchArgs(server string, extra ...string) []string {
	args := append([]string{"bench", "--server", server, "--identifier", pdstest.DefaultHandle, "--password", pdstest.Password}, tinyCounts...)
	return append(args, extra...)
}

// decodeReport parses the JSON report, failing unless stdout is exactly
// one JSON object.
func decodeReport(t *testing.T, r result) bench.Report {
	t.Helper()
	var rep bench.Report
	decodeOne(t, r.stdout, &rep)
	return rep
}

// byName indexes the report's rows by scenario name.
func byName(rep bench.Report) map[string][]bench.Result {
	m := map[string][]bench.Result{}
	for _, res := range rep.Results {
		m[res.Name] = append(m[res.Name], res)
	}
	return m
}

func TestBenchAgainstServer(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t)
	r := run(t, nil, benchArgs(s.URL(), "--json")...)
	if r.code != 0 {
		t.Fatalf("bench: %v", r)
	}
	rep := decodeReport(t, r)
	if rep.Errors != 0 || rep.DID != s.DID() || rep.Local {
		t.Errorf("report: errors %d, did %s, local %v", rep.Errors, rep.DID, rep.Local)
	}
	rows := byName(rep)
	want := map[string][]int{ // scenario → counts of its rows
		bench.CreateSeq:        {4},
		bench.Firehose:         {4, 12}, // 4 writes, delivered to 3 subscribers
		bench.CreateConcurrent: {6},
		bench.ApplyWrites:      {2},
		bench.Export:           {2},
		bench.Blob:             {2, 2},
	}
	for name, counts := range want {
		got := rows[name]
		if len(got) != len(counts) {
			t.Errorf("%s: %d rows, want %d", name, len(got), len(counts))
			continue
		}
		for i, c := range counts {
			if got[i].Count != c || got[i].Errors != 0 {
				t.Errorf("%s row %d (%s): count %d errors %d, want %d and none", name, i, got[i].Title, got[i].Count, got[i].Errors, c)
			}
			if got[i].Latency.Count != c || got[i].Latency.MaxMs <= 0 || got[i].Latency.P50Ms > got[i].Latency.P99Ms {
				t.Errorf("%s row %d: latency %+v", name, i, got[i].Latency)
			}
		}
	}
	if fh := rows[bench.Firehose]; len(fh) == 2 && !strings.Contains(strings.Join(fh[1].Notes, " "), "in a process of their own") {
		t.Errorf("firehose notes %q: the subscribers should run in their own process", fh[1].Notes)
	}
	if reads := rows[bench.GetRecord]; len(reads) != 1 || reads[0].Count == 0 || reads[0].Count > 40 || reads[0].Errors != 0 {
		t.Errorf("get-record rows %+v", reads)
	}
	if ex := rows[bench.Export]; len(ex) == 1 {
		// 2 to warm up + 4 + 4 (+1 probe) + 6 + 20 posts.
		if notes := strings.Join(ex[0].Notes, " "); !strings.Contains(notes, " 37 records") || !strings.Contains(notes, "signature verified") {
			t.Errorf("export notes: %s", notes)
		}
		if ex[0].Bytes <= 0 {
			t.Errorf("export bytes %d", ex[0].Bytes)
		}
	}
	// The test server listens in this process, so the sampled server is
	// the test itself.
	if runtime.GOOS == "linux" && (rep.RSS == nil || rep.RSS.PID != os.Getpid() || rep.RSS.PeakKB <= 0) {
		t.Errorf("rss %+v, want this process sampled", rep.RSS)
	}
	for _, line := range []string{"scenario 1 create-seq", "scenario 7 apply-writes"} {
		if !strings.Contains(r.stderr, line) {
			t.Errorf("stderr lacks progress %q:\n%s", line, r.stderr)
		}
	}
}

func TestBenchMarkdown(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t)
	r := mustRun(t, nil, benchArgs(s.URL(), "--skip", "firehose,blob,get-record", "--pid", "-1")...)
	for _, want := range []string{
		"| # | operation | count | errors | rate | p50 ms | p90 ms | p99 ms | max ms | server RSS |",
		"| 1 | createRecord, sequential | 4 | 0 |",
		"| 2 | createRecord, 2 writers | 6 | 0 |",
		"| 7 | applyWrites, 10 creates per call | 2 | 0 |",
		"| 4 | getRepo, full export | 2 | 0 |",
		"scenario 5 firehose skipped",
		"signature verified",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("report lacks %q:\n%s", want, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "server memory") {
		t.Errorf("--pid -1 still sampled memory:\n%s", r.stdout)
	}
}

// TestBenchFailingMethod points the tool at a server that fails one
// method: the report is still printed, and the command exits 1.
func TestBenchFailingMethod(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		method, scenario string
		json             bool
	}{
		{"com.atproto.repo.getRecord", bench.GetRecord, true},
		{"com.atproto.repo.applyWrites", bench.ApplyWrites, true},
		{"com.atproto.sync.getRepo", bench.Export, false},
		{"com.atproto.repo.createRecord", bench.CreateSeq, true},
	} {
		t.Run(tt.method, func(t *testing.T) {
			t.Parallel()
			s := pdstest.NewServer(t)
			si := newStandIn(t, s, tt.method)
			args := benchArgs(si.URL, "--skip", "firehose,blob", "--pid", "-1")
			if tt.json {
				args = append(args, "--json")
			}
			r := run(t, nil, args...)
			if r.code != 1 || !strings.Contains(r.stderr, "requests failed") {
				t.Fatalf("want exit 1 and a count of failed requests: %v", r)
			}
			if !tt.json {
				if !strings.Contains(r.stdout, "stand-in failure") || !strings.Contains(r.stdout, "requests failed.**") {
					t.Errorf("markdown report does not show the failure:\n%s", r.stdout)
				}
				return
			}
			rep := decodeReport(t, r)
			rows := byName(rep)[tt.scenario]
			if rep.Errors == 0 || len(rows) != 1 || rows[0].Errors == 0 || !strings.Contains(rows[0].FirstError, "500 InternalServerError: stand-in failure") {
				t.Errorf("errors %d, rows %+v", rep.Errors, rows)
			}
			if tt.scenario == bench.CreateSeq {
				if !strings.Contains(strings.Join(rep.Notes, " "), "warm-up: 0 createRecord calls") {
					t.Errorf("notes %q do not report the failed warm-up", rep.Notes)
				}
				return
			}
			if seq := byName(rep)[bench.CreateSeq]; len(seq) != 1 || seq[0].Errors != 0 {
				t.Errorf("other scenarios should be unaffected: %+v", seq)
			}
		})
	}
}

func TestBenchUsage(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"bench"},
		{"bench", "--server", "http://127.0.0.1:1", "--identifier", "a.test"},
		{"bench", "--server", "ftp://x", "--identifier", "a.test", "--password", "p"},
		{"bench", "--local", "--server", "http://127.0.0.1:1"},
		{"bench", "--local", "--skip", "nope"},
		{"bench", "--local", "--batch-size", "201"},
		{"bench", "--local", "--records", "0"},
		{"bench", "--local", "--read-time", "0s"},
		{"bench", "--local", "--writers", "-1"},
		{"bench", "--server", "http://127.0.0.1:1", "--identifier", "a", "--password", "p", "--profile", t.TempDir()},
		{"bench", "--server", "http://127.0.0.1:1", "--identifier", "a", "--password", "p", "--serve-arg", "--x"},
	} {
		if r := run(t, nil, args...); r.code != 2 {
			t.Errorf("pds %s: %v, want exit 2", strings.Join(args, " "), r)
		}
	}
	// No server answering is a failure to start, not a usage error.
	r := run(t, nil, "bench", "--server", "http://127.0.0.1:1", "--identifier", "a.test", "--password", "p")
	if r.code != 1 || !strings.Contains(r.stderr, "create session") {
		t.Errorf("unreachable server: %v", r)
	}
}

// TestBenchLocal runs `pds bench --local`: the test binary starts itself
// as the server, in a child process, and profiles it.
func TestBenchLocal(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server process")
	}
	t.Setenv(asPDS, "1")
	profiles := filepath.Join(t.TempDir(), "profiles")
	r := run(t, nil, append([]string{"bench", "--local", "--json", "--profile", profiles}, tinyCounts...)...)
	if r.code != 0 {
		t.Fatalf("bench --local: %v", r)
	}
	rep := decodeReport(t, r)
	if !rep.Local || rep.Errors != 0 || len(rep.Results) != 9 {
		t.Errorf("local %v, errors %d, %d rows", rep.Local, rep.Errors, len(rep.Results))
	}
	if runtime.GOOS == "linux" {
		if rep.RSS == nil || rep.RSS.PID == os.Getpid() || rep.RSS.PeakKB <= 0 || rep.Results[0].RSSKB <= 0 {
			t.Errorf("rss %+v (row 1: %d kB), want the child server's", rep.RSS, rep.Results[0].RSSKB)
		}
	}
	want := []string{"cpu-create-seq.pprof", "cpu-firehose.pprof", "cpu-create-concurrent.pprof", "cpu-apply-writes.pprof",
		"cpu-get-record.pprof", "cpu-export.pprof", "cpu-blob.pprof", "heap.pprof"}
	for _, f := range want {
		st, err := os.Stat(filepath.Join(profiles, f))
		if err != nil || st.Size() == 0 {
			t.Errorf("profile %s: %v", f, err)
		}
	}
	if len(rep.Profiles) != len(want) {
		t.Errorf("report lists profiles %v", rep.Profiles)
	}
}

// TestServeDebugAddrLoopbackOnly: the pprof listener never binds a
// public interface.
func TestServeDebugAddrLoopbackOnly(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	initDir(t, dir)
	for _, addr := range []string{"0.0.0.0:0", "[::]:0", "192.0.2.1:6060", "nonsense"} {
		r := run(t, nil, "serve", "--data-dir", dir, "--port", "0", "--debug-addr", addr)
		if r.code != 2 || !strings.Contains(r.stderr, "--debug-addr") {
			t.Errorf("--debug-addr %s: %v, want a usage error", addr, r)
		}
	}
}
