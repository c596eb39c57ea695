package cli_test

import (
	"net/http"
	"strings"
	"testing"
)

// Ensure activate and deactivate talk to a running server over HTTP with
// the admin token: the running server changes state at once, and a wrong
// --server is an error, not a silent change of the local files.
func TestActivateDeactivateRemote(t *testing.T) {
	dir := t.TempDir()
	out := initDir(t, dir)
	srv := startServe(t, nil, "--data-dir", dir, "--port", "0")
	status := func() (bool, string) {
		var st struct {
			Active bool   `json:"active"`
			Status string `json:"status"`
		}
		if code := call(t, http.MethodGet, srv.base+"/xrpc/com.atproto.sync.getRepoStatus?did="+out.DID, "", nil, &st); code != http.StatusOK {
			t.Fatalf("getRepoStatus: %d", code)
		}
		return st.Active, st.Status
	}
	r := mustRun(t, nil, "deactivate", "-y", "--data-dir", dir, "--server", srv.base)
	if !strings.Contains(r.stdout, "is now deactivated") {
		t.Fatalf("deactivate: %v", r)
	}
	if active, st := status(); active || st != "deactivated" {
		t.Fatalf("server says active=%v status=%q after deactivate", active, st)
	}
	r = mustRun(t, nil, "activate", "-y", "--data-dir", dir, "--server", srv.base)
	if !strings.Contains(r.stdout, "is now active") {
		t.Fatalf("activate: %v", r)
	}
	if active, _ := status(); !active {
		t.Fatal("server says inactive after activate")
	}
	r = run(t, nil, "deactivate", "-y", "--data-dir", dir, "--server", "http://127.0.0.1:1")
	if r.code != 1 || !strings.Contains(r.stderr, "cannot reach the PDS") {
		t.Fatalf("unreachable --server: %v", r)
	}
	if active, _ := status(); !active {
		t.Fatal("a failed remote deactivate changed the account")
	}
}
