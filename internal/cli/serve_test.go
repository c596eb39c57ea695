package cli_test

import (
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"stratus/internal/config"
	"stratus/internal/server"
)

func TestServeRefusesInvalidConfig(t *testing.T) {
	t.Parallel()
	required := []string{"hostname", "public-url", "did", "handle", "signing-key", "jwt-secret", "admin-token", "password-hash"}
	tests := []struct {
		name     string
		init     bool                          // initialise the dir first
		edit     func(settings map[string]any) // change settings.json
		env      map[string]string
		args     []string
		wantCode int
		want     []string // settings the error must name
		notWant  []string
	}{
		{name: "empty dir", wantCode: 1, want: required},
		{name: "empty dir with PDS_DATA_DIR", wantCode: 1, want: required},
		{name: "bad handle in settings.json", init: true, edit: func(s map[string]any) { s["handle"] = "not a handle" },
			wantCode: 1, want: []string{"handle"}, notWant: []string{"hostname", "did", "signing-key"}},
		{name: "did:web not matching public url", init: true, edit: func(s map[string]any) { s["public-url"] = "https://other.test" },
			wantCode: 1, want: []string{"did"}, notWant: []string{"handle"}},
		{name: "bad PDS_HANDLE", init: true, env: map[string]string{"PDS_HANDLE": "bad_handle!"},
			wantCode: 1, want: []string{"handle"}, notWant: []string{"hostname"}},
		{name: "bad --handle", init: true, args: []string{"--handle", "alice"},
			wantCode: 1, want: []string{"handle"}},
		{name: "bad PDS_LOG_LEVEL", init: true, env: map[string]string{"PDS_LOG_LEVEL": "chatty"},
			wantCode: 1, want: []string{"log-level"}},
		{name: "short --admin-token", init: true, args: []string{"--admin-token", "short"},
			wantCode: 1, want: []string{"admin-token"}},
		{name: "bad PDS_PORT", init: true, env: map[string]string{"PDS_PORT": "http"}, wantCode: 1},
		{name: "bad --port", init: true, args: []string{"--port", "99999"}, wantCode: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			if tt.init {
				initDir(t, dir)
			}
			if tt.edit != nil {
				path := filepath.Join(dir, config.SettingsFile)
				s := readJSONFile(t, path)
				tt.edit(s)
				b, _ := json.Marshal(s)
				if err := os.WriteFile(path, b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			before := snapshot(t, dir)
			args := []string{"serve", "--data-dir", dir, "--port", "0"}
			env := tt.env
			if strings.Contains(tt.name, "PDS_DATA_DIR") {
				args = []string{"serve", "--port", "0"}
				env = map[string]string{"PDS_DATA_DIR": dir}
			}
			r := run(t, env, append(args, tt.args...)...)
			if r.code != tt.wantCode {
				t.Fatalf("exit %d, want %d: %v", r.code, tt.wantCode, r)
			}
			if strings.Contains(r.stdout, "listening") {
				t.Errorf("server started:\n%s", r.stdout)
			}
			for _, f := range tt.want {
				for _, s := range []string{"\n  " + f + " ", "--" + f + " ", "PDS_" + strings.ToUpper(strings.ReplaceAll(f, "-", "_"))} {
					if !strings.Contains(r.stderr, s) {
						t.Errorf("error does not name %q:\n%s", s, r.stderr)
					}
				}
			}
			for _, f := range tt.notWant {
				if strings.Contains(r.stderr, "\n  "+f+" ") {
					t.Errorf("error names %q although it is fine:\n%s", f, r.stderr)
				}
			}
			if strings.HasPrefix(tt.name, "bad PDS_PORT") && !strings.Contains(r.stderr, "PDS_PORT") {
				t.Errorf("error does not name PDS_PORT: %s", r.stderr)
			}
			if strings.HasPrefix(tt.name, "bad --port") && !strings.Contains(r.stderr, "--port") {
				t.Errorf("error does not name --port: %s", r.stderr)
			}
			if after := snapshot(t, dir); !mapsEqual(before, after) {
				t.Errorf("refused serve changed the data dir:\n before %v\n after  %v", keysOf(before), keysOf(after))
			}
		})
	}
}

func keysOf(m map[string]string) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

func TestServeEndToEnd(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	acct := initDir(t, dir, "--password", testPassword)

	s := startServe(t, nil, "--data-dir", dir, "--port", "0")
	if !strings.HasPrefix(s.base, "http://127.0.0.1:") {
		t.Errorf("listening on %s, want the default bind 127.0.0.1", s.base)
	}
	if s.port == "0" {
		t.Error("printed port 0 instead of the port chosen")
	}
	for _, want := range []string{"URL     https://pds.test", "DID     " + acct.DID, "Handle  alice.test"} {
		if !strings.Contains(s.stdout.String(), want) {
			t.Errorf("stdout lacks %q:\n%s", want, s.stdout)
		}
	}
	for _, secret := range []string{acct.AdminToken, acct.SigningKey, "Password"} {
		if strings.Contains(s.stdout.String(), secret) {
			t.Errorf("serve of an initialised dir prints %q", secret)
		}
	}

	var health struct {
		Version string `json:"version"`
	}
	if code := call(t, "GET", s.base+"/xrpc/_health", "", nil, &health); code != http.StatusOK {
		t.Fatalf("_health = %d", code)
	}
	if health.Version != server.Version {
		t.Errorf("_health version %q, want %q", health.Version, server.Version)
	}

	post := map[string]any{
		"repo":       acct.DID,
		"collection": "app.bsky.feed.post",
		"record": map[string]any{
			"$type":     "app.bsky.feed.post",
			"text":      "hello from the cli test",
			"createdAt": time.Now().UTC().Format(time.RFC3339),
		},
	}
	if code := call(t, "POST", s.base+"/xrpc/com.atproto.repo.createRecord", "", post, nil); code != http.StatusUnauthorized {
		t.Errorf("createRecord without a token = %d, want 401", code)
	}
	if code := call(t, "POST", s.base+"/xrpc/com.atproto.repo.createRecord", "wrong-token-0123456789", post, nil); code != http.StatusUnauthorized {
		t.Errorf("createRecord with a wrong token = %d, want 401", code)
	}
	var created struct {
		URI string `json:"uri"`
		CID string `json:"cid"`
	}
	if code := call(t, "POST", s.base+"/xrpc/com.atproto.repo.createRecord", acct.AdminToken, post, &created); code != http.StatusOK {
		t.Fatalf("createRecord with the admin token = %d", code)
	}
	if !strings.HasPrefix(created.URI, "at://"+acct.DID+"/app.bsky.feed.post/") || created.CID == "" {
		t.Errorf("createRecord = %+v", created)
	}
	var status struct {
		Active bool   `json:"active"`
		Rev    string `json:"rev"`
	}
	if code := call(t, "GET", s.base+"/xrpc/com.atproto.sync.getRepoStatus?did="+acct.DID, "", nil, &status); code != http.StatusOK || !status.Active || status.Rev == "" {
		t.Errorf("getRepoStatus = %d %+v", code, status)
	}

	if code := s.stop(t); code != 0 {
		t.Errorf("serve exited %d after cancellation:\n%s\n%s", code, s.stdout, s.stderr)
	}
	if !strings.Contains(s.stdout.String(), "shutting down") {
		t.Errorf("stdout lacks \"shutting down\":\n%s", s.stdout)
	}
	if _, err := net.DialTimeout("tcp", strings.TrimPrefix(s.base, "http://"), time.Second); err == nil {
		t.Error("port still accepts connections after shutdown")
	}
	if _, err := os.Stat(filepath.Join(dir, config.DatabaseFile)); err != nil {
		t.Errorf("no database after serving: %v", err)
	}

	// A second start finds the record written by the first.
	s2 := startServe(t, nil, "--data-dir", dir, "--port", "0")
	var got struct {
		URI string `json:"uri"`
	}
	rkey := created.URI[strings.LastIndex(created.URI, "/")+1:]
	if code := call(t, "GET", s2.base+"/xrpc/com.atproto.repo.getRecord?repo="+acct.DID+"&collection=app.bsky.feed.post&rkey="+rkey, "", nil, &got); code != http.StatusOK || got.URI != created.URI {
		t.Errorf("getRecord after restart = %d %+v", code, got)
	}
	if code := s2.stop(t); code != 0 {
		t.Errorf("second serve exited %d", code)
	}
}

// freePort returns a port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}

func TestServeDev(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "dev")
	port := freePort(t)
	ps := strconv.Itoa(port)

	s := startServe(t, nil, "--dev", "--data-dir", dir, "--port", ps)
	m := waitFor(t, s.stdout, regexp.MustCompile(`Admin token\s+(\S+)\n`), s.done)
	adminToken := m[1]
	out := s.stdout.String()
	pm := regexp.MustCompile(`Password \(shown once\)\s+(\S+)\n`).FindStringSubmatch(out)
	if pm == nil {
		t.Fatalf("no password in stdout:\n%s", out)
	}
	password := pm[1]
	if s.port != ps {
		t.Errorf("listening on port %s, want %s", s.port, ps)
	}
	for _, want := range []string{"Created a development account", "http://localhost:" + ps, "Handle  dev.test"} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, password); n != 1 {
		t.Errorf("password printed %d times", n)
	}

	settings, secrets := checkFiles(t, dir)
	wantDID := "did:web:localhost%3A" + ps
	for k, want := range map[string]string{"did": wantDID, "handle": "dev.test", "public-url": "http://localhost:" + ps, "hostname": "localhost"} {
		if got := str(t, settings, k); got != want {
			t.Errorf("settings %s = %q, want %q", k, got, want)
		}
	}
	if !strings.Contains(out, "DID     "+wantDID) {
		t.Errorf("stdout lacks the DID %s:\n%s", wantDID, out)
	}
	checkHash(t, str(t, secrets, "password-hash"), password)
	if str(t, secrets, "admin-token") != adminToken {
		t.Error("printed admin token differs from secrets.json")
	}
	if code := call(t, "GET", s.base+"/xrpc/_health", "", nil, nil); code != http.StatusOK {
		t.Errorf("_health = %d", code)
	}
	var doc struct {
		ID string `json:"id"`
	}
	if code := call(t, "GET", s.base+"/.well-known/did.json", "", nil, &doc); code != http.StatusOK || doc.ID != wantDID {
		t.Errorf("did.json = %d %+v", code, doc)
	}
	if code := s.stop(t); code != 0 {
		t.Fatalf("dev serve exited %d", code)
	}
	secretsBefore := snapshot(t, dir)[config.SecretsFile]

	// The second run serves the existing account: no new password, no
	// admin token shown, secrets untouched. The port is remembered.
	s2 := startServe(t, nil, "--dev", "--data-dir", dir)
	out2 := s2.stdout.String()
	if s2.port != ps {
		t.Errorf("second run listens on %s, want the saved port %s", s2.port, ps)
	}
	for _, never := range []string{"Password", password, adminToken, "Created a development account"} {
		if strings.Contains(out2, never) {
			t.Errorf("second run prints %q:\n%s", never, out2)
		}
	}
	if code := s2.stop(t); code != 0 {
		t.Errorf("second dev serve exited %d", code)
	}
	if got := snapshot(t, dir)[config.SecretsFile]; got != secretsBefore {
		t.Error("second dev run changed secrets.json")
	}
}

func TestServeDevNeedsFixedPort(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "dev")
	r := run(t, nil, "serve", "--dev", "--data-dir", dir, "--port", "0")
	if r.code != 2 {
		t.Fatalf("exit %d, want 2: %v", r.code, r)
	}
	if !strings.Contains(r.stderr, "--port") {
		t.Errorf("error does not name --port: %s", r.stderr)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("refused --dev wrote %v", keysOf(snapshot(t, dir)))
	}
}

func TestServePortInUse(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	initDir(t, dir)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	r := run(t, nil, "serve", "--data-dir", dir, "--port", port)
	if r.code != 1 {
		t.Fatalf("exit %d, want 1: %v", r.code, r)
	}
	if !strings.Contains(r.stderr, port) {
		t.Errorf("error does not name the port %s: %s", port, r.stderr)
	}
	// The database was closed: the account can be opened again at once.
	if got := accountStatus(t, dir); got != "active" {
		t.Errorf("status %q", got)
	}
}
