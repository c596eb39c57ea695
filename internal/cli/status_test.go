package cli_test

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"stratus/internal/config"
	"stratus/internal/pdstest"
	"stratus/internal/status"
)

// closedPort returns a loopback port nothing listens on (it was free a
// moment ago), so a command looking for a local server finds none.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return strconv.Itoa(port)
}

// TestStatusOnline runs pds status against a running server, as text and
// as JSON.
func TestStatusOnline(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t)
	s.CreateRecord(t, "app.bsky.feed.post", "", pdstest.Post("hi"))
	flags := []string{"--server", s.URL(), "--admin-token", s.AdminToken()}

	r := mustRun(t, nil, append([]string{"status"}, flags...)...)
	for _, want := range []string{"online, up ", "Account", "DID          " + s.DID(), "Handle       " + s.Handle(),
		"Status       active", "app.bsky.feed.post 1", "Storage", "Firehose", "Subscribers", "Sessions", "Crawlers",
		"Identity", "DID document  names the signing key", "Recent events", "create app.bsky.feed.post/", "No problems."} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("status output lacks %q:\n%s", want, r.stdout)
		}
	}
	noSecret(t, r, "admin token", s.AdminToken())

	r = mustRun(t, nil, append([]string{"status", "--json"}, flags...)...)
	var rep status.Report
	decodeOne(t, r.stdout, &rep)
	if rep.Offline || rep.Account.DID != s.DID() || rep.Account.Records != 1 || rep.Firehose.LatestSeq == 0 || rep.Problems == nil {
		t.Errorf("JSON report = %+v", rep)
	}

	// Only the admin token is accepted.
	r = run(t, nil, "status", "--server", s.URL(), "--admin-token", "wrong-token-but-long-enough")
	if r.code != 1 || !strings.Contains(r.stderr, "refused the admin token") {
		t.Errorf("wrong token: %v", r)
	}
	// An explicit server that does not answer is an error, not a fallback.
	r = run(t, nil, "status", "--server", "http://127.0.0.1:"+closedPort(t), "--admin-token", s.AdminToken())
	if r.code != 1 || !strings.Contains(r.stderr, "cannot reach the PDS") {
		t.Errorf("unreachable explicit server: %v", r)
	}
}

// TestStatusOffline reads a data directory whose server is not running,
// and reports a data directory that cannot be opened as a problem.
func TestStatusOffline(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	acct := initDir(t, dir, "--password", testPassword, "--port", closedPort(t))

	// Before the first start there is no database to read.
	r := run(t, nil, "status", "--data-dir", dir)
	if r.code != 1 || !strings.Contains(r.stderr, "no database yet") {
		t.Fatalf("status before the first start: %v", r)
	}
	if _, err := os.Stat(filepath.Join(dir, config.DatabaseFile)); !os.IsNotExist(err) {
		t.Errorf("status created the database: %v", err)
	}

	accountStatus(t, dir) // opens the data directory as the server does
	r = mustRun(t, nil, "status", "--data-dir", dir)
	for _, want := range []string{"OFFLINE", acct.DID, "Status       active", "No problems."} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("offline status lacks %q:\n%s", want, r.stdout)
		}
	}
	r = mustRun(t, nil, "status", "--data-dir", dir, "--json")
	var rep status.Report
	decodeOne(t, r.stdout, &rep)
	if !rep.Offline || rep.Account.DID != acct.DID || rep.Account.Head == "" || rep.Firehose.LatestSeq == 0 {
		t.Errorf("offline JSON report = %+v", rep)
	}

	// A deactivated account is reported, with exit status 0.
	mustRun(t, nil, "deactivate", "-y", "--data-dir", dir)
	r = mustRun(t, nil, "status", "--data-dir", dir)
	if !strings.Contains(r.stdout, "Status       deactivated") {
		t.Errorf("deactivated status:\n%s", r.stdout)
	}

	// Storage that cannot be read is a problem: exit status 1.
	db := filepath.Join(dir, config.DatabaseFile)
	for _, f := range []string{db + "-wal", db + "-shm"} {
		os.Remove(f)
	}
	if err := os.WriteFile(db, []byte(strings.Repeat("not a database ", 512)), 0o600); err != nil {
		t.Fatal(err)
	}
	r = run(t, nil, "status", "--data-dir", dir, "--json")
	if r.code != 1 {
		t.Fatalf("status of a garbled database: %v", r)
	}
	decodeOne(t, r.stdout, &rep)
	if !rep.Offline || len(rep.Problems) == 0 || !strings.Contains(rep.Problems[0], "cannot open the data directory") {
		t.Errorf("garbled database report = %+v", rep)
	}
	if !strings.Contains(r.stderr, "1 problem(s) need attention") {
		t.Errorf("stderr = %s", r.stderr)
	}
}
