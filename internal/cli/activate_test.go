package cli_test

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"stratus/internal/account"
	"stratus/internal/config"
	"stratus/internal/server"
)

func TestActivateDeactivate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	acct := initDir(t, dir, "--password", testPassword)

	// Without -y and without a terminal nothing happens, not even opening
	// the database.
	r := run(t, nil, "deactivate", "--data-dir", dir)
	if r.code != 2 {
		t.Fatalf("deactivate without -y: %v", r)
	}
	if !strings.Contains(r.stderr, "-y") {
		t.Errorf("refusal does not mention -y: %s", r.stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, config.DatabaseFile)); !os.IsNotExist(err) {
		t.Errorf("refused deactivate opened the database: %v", err)
	}
	if got := accountStatus(t, dir); got != account.Active {
		t.Fatalf("status after refused deactivate = %q, want active", got)
	}

	steps := []struct {
		args     []string
		wantCode int
		wantOut  string
		want     account.Status
	}{
		{[]string{"deactivate"}, 2, "", account.Active},
		{[]string{"deactivate", "-y"}, 0, acct.DID + " is now deactivated", account.Deactivated},
		{[]string{"deactivate", "--yes"}, 0, acct.DID + " is already deactivated", account.Deactivated},
		{[]string{"activate"}, 2, "", account.Deactivated},
		{[]string{"activate", "-y"}, 0, acct.DID + " is now active", account.Active},
		{[]string{"activate", "-y"}, 0, acct.DID + " is already active", account.Active},
	}
	for _, st := range steps {
		name := strings.Join(st.args, " ")
		r := run(t, nil, append(st.args, "--data-dir", dir)...)
		if r.code != st.wantCode {
			t.Fatalf("%s: %v", name, r)
		}
		if st.wantOut != "" && !strings.Contains(r.stdout, st.wantOut) {
			t.Errorf("%s: stdout lacks %q:\n%s", name, st.wantOut, r.stdout)
		}
		if st.wantCode != 0 && r.stdout != "" {
			t.Errorf("%s: refused command printed %q", name, r.stdout)
		}
		if got := accountStatus(t, dir); got != st.want {
			t.Errorf("%s: status %q, want %q", name, got, st.want)
		}
	}
}

// TestDeactivatedAccountServed checks the state set by the CLI through a
// running server: getRepoStatus reports it and writes are refused.
func TestDeactivatedAccountServed(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	acct := initDir(t, dir, "--password", testPassword)
	mustRun(t, nil, "deactivate", "-y", "--data-dir", dir)

	s := startServe(t, nil, "--data-dir", dir, "--port", "0")
	var status struct {
		Active bool   `json:"active"`
		Status string `json:"status"`
	}
	if code := call(t, "GET", s.base+"/xrpc/com.atproto.sync.getRepoStatus?did="+acct.DID, "", nil, &status); code != http.StatusOK {
		t.Fatalf("getRepoStatus = %d", code)
	}
	if status.Active || status.Status != "deactivated" {
		t.Errorf("getRepoStatus = %+v, want deactivated", status)
	}
	post := map[string]any{
		"repo": acct.DID, "collection": "app.bsky.feed.post",
		"record": map[string]any{"$type": "app.bsky.feed.post", "text": "x", "createdAt": "2024-01-01T00:00:00Z"},
	}
	if code := call(t, "POST", s.base+"/xrpc/com.atproto.repo.createRecord", acct.AdminToken, post, nil); code == http.StatusOK {
		t.Error("createRecord succeeded on a deactivated account")
	}
	if code := s.stop(t); code != 0 {
		t.Fatalf("serve exited %d", code)
	}

	mustRun(t, nil, "activate", "-y", "--data-dir", dir)
	s2 := startServe(t, nil, "--data-dir", dir, "--port", "0")
	if code := call(t, "GET", s2.base+"/xrpc/com.atproto.sync.getRepoStatus?did="+acct.DID, "", nil, &status); code != http.StatusOK || !status.Active {
		t.Errorf("getRepoStatus after activate = %d %+v", code, status)
	}
}

func TestActivateInitiallyInactive(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	initDir(t, dir, "--initially-active", "false")
	if got := accountStatus(t, dir); got != account.Deactivated {
		t.Fatalf("account created with initially-active false is %q", got)
	}
	r := mustRun(t, nil, "activate", "-y", "--data-dir", dir)
	if !strings.Contains(r.stdout, "is now active") {
		t.Errorf("stdout = %q", r.stdout)
	}
}

func TestActivateInvalidConfig(t *testing.T) {
	t.Parallel()
	for _, cmd := range []string{"activate", "deactivate"} {
		t.Run(cmd, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			r := run(t, nil, cmd, "-y", "--data-dir", dir)
			if r.code != 1 {
				t.Fatalf("exit %d, want 1: %v", r.code, r)
			}
			for _, want := range []string{"hostname", "PDS_HANDLE", "--signing-key"} {
				if !strings.Contains(r.stderr, want) {
					t.Errorf("error does not name %q: %s", want, r.stderr)
				}
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Errorf("%s on an empty dir wrote %v", cmd, entries)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	t.Parallel()
	r := mustRun(t, nil, "version")
	if r.stdout != "stratus "+server.Version+"\n" {
		t.Errorf("version printed %q, want %q", r.stdout, "stratus "+server.Version+"\n")
	}
	if r.stderr != "" {
		t.Errorf("stderr = %q", r.stderr)
	}
}

func TestHelp(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"--help"}, {"init", "--help"}, {"serve", "--help"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			t.Parallel()
			r := run(t, nil, args...)
			if r.code != 0 || !strings.Contains(r.stdout, "Usage:") {
				t.Errorf("%v", r)
			}
		})
	}
	// Every setting has a flag on serve, spelled as in the files, with its
	// environment variable in the help text.
	r := run(t, nil, "serve", "--help")
	for _, f := range config.Fields() {
		if !strings.Contains(r.stdout, "--"+f.Name+" ") || !strings.Contains(r.stdout, f.Env()) {
			t.Errorf("serve --help lacks --%s / %s", f.Name, f.Env())
		}
	}
}

// TestUsageErrors: command-line mistakes exit 2 (usageError in cli.go),
// other failures 1.
func TestUsageErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown flag on version", []string{"version", "--bogus"}, "--bogus"},
		{"unknown root flag", []string{"--bogus"}, "--bogus"},
		{"unknown flag on init", []string{"init", "--nope"}, "--nope"},
		{"unknown shorthand", []string{"serve", "-z"}, "-z"},
		{"flag without value", []string{"serve", "--port"}, "--port"},
		{"unknown command", []string{"bogus"}, "bogus"},
		{"extra argument", []string{"version", "extra"}, "extra"},
		{"extra argument to init", []string{"init", "--yes", "pds.test"}, "pds.test"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := run(t, nil, tt.args...)
			if r.code != 2 {
				t.Errorf("exit %d, want 2: %v", r.code, r)
			}
			if !strings.Contains(r.stderr, tt.want) {
				t.Errorf("stderr does not name %q: %s", tt.want, r.stderr)
			}
		})
	}
}
