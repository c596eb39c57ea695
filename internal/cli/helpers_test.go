package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"stratus/internal/account"
	"stratus/internal/cli"
	"stratus/internal/config"
	"stratus/internal/server"
)

// syncBuffer is a bytes.Buffer safe for a command writing from one
// goroutine while the test reads from another.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// result is what one run of the pds command produced.
type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\n--- stdout\n%s--- stderr\n%s", r.code, r.stdout, r.stderr)
}

// newIO returns an IO with no terminal, the given environment and
// synchronised output buffers.
func newIO(env map[string]string) (cli.IO, *syncBuffer, *syncBuffer) {
	var stdout, stderr syncBuffer
	return cli.IO{
		Stdin:  strings.NewReader(""),
		Stdout: &stdout,
		Stderr: &stderr,
		Getenv: func(k string) string { return env[k] },
	}, &stdout, &stderr
}

// hangTimeout bounds every in-process command, so that a deadlock fails
// the test with the stacks involved instead of hanging the whole run.
const hangTimeout = 60 * time.Second

// within runs f, failing the test if it has not returned after d.
func within(t *testing.T, d time.Duration, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s did not finish within %v; stacks:\n%s", what, d, stacks())
	}
}

// stacks returns the stacks of the goroutines running project code.
func stacks() string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var keep []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "stratus/internal/") && !strings.Contains(g, "cli_test.stacks") {
			keep = append(keep, g)
		}
	}
	return strings.Join(keep, "\n\n")
}

// run runs the pds command in-process to completion.
func run(t *testing.T, env map[string]string, args ...string) result {
	t.Helper()
	e, stdout, stderr := newIO(env)
	var code int
	within(t, hangTimeout, "pds "+strings.Join(args, " "), func() { code = cli.Main(t.Context(), args, e) })
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// mustRun runs the command and fails the test unless it exits 0.
func mustRun(t *testing.T, env map[string]string, args ...string) result {
	t.Helper()
	r := run(t, env, args...)
	if r.code != 0 {
		t.Fatalf("pds %s: %v", strings.Join(args, " "), r)
	}
	return r
}

// initOutput is the JSON printed by pds init --json.
type initOutput struct {
	DataDir          string `json:"dataDir"`
	DID              string `json:"did"`
	Handle           string `json:"handle"`
	PublicURL        string `json:"publicUrl"`
	AdminToken       string `json:"adminToken"`
	SigningKey       string `json:"signingKey"`
	SigningKeyPublic string `json:"signingKeyPublic"`
	RotationKey      string `json:"rotationKey"`
	RotationKeyPub   string `json:"rotationKeyPublic"`
	Password         string `json:"password"`
	Existing         bool   `json:"existing"`
}

// decodeOne decodes stdout as exactly one JSON object into v, and returns
// the object's keys.
func decodeOne(t *testing.T, stdout string, v any) map[string]any {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(stdout))
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s", err, stdout)
	}
	var extra json.RawMessage
	if err := dec.Decode(&extra); err != io.EOF {
		t.Fatalf("stdout holds more than one JSON value: %s", stdout)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		t.Fatalf("decode %s: %v", raw, err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("stdout is not a JSON object: %s", raw)
	}
	return m
}

// initArgs are the arguments of a scripted did:web init of dir.
func initArgs(dir string, extra ...string) []string {
	return append([]string{"init", "--data-dir", dir, "--handle", "alice.test", "--hostname", "pds.test",
		"--public-url", "https://pds.test", "--email", "a@b.c", "--yes"}, extra...)
}

// initDir initialises a did:web data directory and returns the JSON report.
func initDir(t *testing.T, dir string, extra ...string) initOutput {
	t.Helper()
	r := mustRun(t, nil, initArgs(dir, append([]string{"--json"}, extra...)...)...)
	var out initOutput
	decodeOne(t, r.stdout, &out)
	return out
}

// readJSONFile reads a data directory file as a map of its keys.
func readJSONFile(t *testing.T, path string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
	return m
}

// str returns m[k] as a string, failing when it is not one.
func str(t *testing.T, m map[string]any, k string) string {
	t.Helper()
	v, ok := m[k].(string)
	if !ok {
		t.Fatalf("%q is %T %v, want a string", k, m[k], m[k])
	}
	return v
}

// snapshot returns the content of every file in dir, to compare before and
// after a command that must change nothing.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	files := map[string]string{}
	entries, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return files
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() {
			files[e.Name()+"/"] = ""
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if errors.Is(err, fs.ErrNotExist) {
			// SQLite's -wal and -shm files go when the last connection
			// closes, which may be just after the listing.
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		files[e.Name()] = string(b)
	}
	return files
}

// accountStatus opens the data directory the way the server does and
// returns the account's status.
func accountStatus(t *testing.T, dir string) account.Status {
	t.Helper()
	c, err := config.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	var srv *server.Server
	within(t, hangTimeout, "server.Open", func() {
		srv, err = server.Open(t.Context(), c, slog.New(slog.NewTextHandler(io.Discard, nil)))
	})
	if err != nil {
		t.Fatalf("open server: %v", err)
	}
	defer srv.Close()
	a, err := srv.Accounts().Get(t.Context(), syntax.DID(c.DID))
	if err != nil {
		t.Fatalf("get account: %v", err)
	}
	return a.Status
}

var listeningRE = regexp.MustCompile(`listening on ([0-9a-zA-Z.:\[\]]+):(\d+)\n`)

// waitFor polls out until re matches or the deadline passes.
func waitFor(t *testing.T, out interface{ String() string }, re *regexp.Regexp, done <-chan int) []string {
	t.Helper()
	deadline := time.Now().Add(hangTimeout)
	for time.Now().Before(deadline) {
		if m := re.FindStringSubmatch(out.String()); m != nil {
			return m
		}
		select {
		case code := <-done:
			t.Fatalf("command exited with %d before printing %q:\n%s", code, re, out.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	t.Fatalf("timed out waiting for %q in:\n%s\nstacks:\n%s", re, out.String(), stacks())
	return nil
}

// serving is a `pds serve` running in-process.
type serving struct {
	base           string // http://127.0.0.1:port
	port           string
	stdout, stderr *syncBuffer
	cancel         context.CancelFunc
	done           chan int
}

// startServe runs pds serve with args in a goroutine until stop is called
// (or the test ends) and waits for its listening line.
func startServe(t *testing.T, env map[string]string, args ...string) *serving {
	t.Helper()
	e, stdout, stderr := newIO(env)
	ctx, cancel := context.WithCancel(context.Background())
	s := &serving{stdout: stdout, stderr: stderr, cancel: cancel, done: make(chan int, 1)}
	go func() { s.done <- cli.Main(ctx, append([]string{"serve"}, args...), e) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-s.done:
		case <-time.After(15 * time.Second):
			t.Error("serve did not stop within 15s of cancellation")
		}
	})
	m := waitFor(t, stdout, listeningRE, s.done)
	s.port = m[2]
	s.base = "http://" + m[1] + ":" + m[2]
	return s
}

// stop cancels the server's context and returns its exit status.
func (s *serving) stop(t *testing.T) int {
	t.Helper()
	s.cancel()
	select {
	case code := <-s.done:
		s.done <- code // for the cleanup
		return code
	case <-time.After(15 * time.Second):
		t.Fatal("serve did not stop within 15s of cancellation")
		return -1
	}
}

// call sends one HTTP request and decodes a JSON answer into out (if not
// nil), returning the status code.
func call(t *testing.T, method, url, token string, body, out any) int {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if out != nil && resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: decode %s: %v", method, url, b, err)
		}
	}
	if resp.StatusCode != http.StatusOK {
		t.Logf("%s %s: %d %s", method, url, resp.StatusCode, b)
	}
	return resp.StatusCode
}
