package cli_test

import (
	"net/http"
	"strings"
	"testing"
)

// pds handle set changes the handle on the running server; pds identity
// plc-token fails clearly when no token was requested.
func TestHandleSetAndPLCToken(t *testing.T) {
	dir := t.TempDir()
	out := initDir(t, dir)
	srv := startServe(t, nil, "--data-dir", dir, "--port", "0", "--user-domains", ".pds.test")
	r := mustRun(t, nil, "handle", "set", "Bob.pds.test", "--data-dir", dir, "--server", srv.base)
	if !strings.Contains(r.stdout, "Handle set to bob.pds.test") {
		t.Fatalf("handle set: %v", r)
	}
	var res struct {
		DID string `json:"did"`
	}
	if code := call(t, http.MethodGet, srv.base+"/xrpc/com.atproto.identity.resolveHandle?handle=bob.pds.test", "", nil, &res); code != 200 || res.DID != out.DID {
		t.Fatalf("resolveHandle after set: %d %s", code, res.DID)
	}
	if r := run(t, nil, "handle", "set", "--data-dir", dir, "--server", srv.base); r.code != 2 {
		t.Fatalf("handle set without a handle: %v", r)
	}
	if r := run(t, nil, "handle", "set", "x.invalid", "--data-dir", dir, "--server", srv.base); r.code != 1 || !strings.Contains(r.stderr, "InvalidHandle") {
		t.Fatalf("invalid handle: %v", r)
	}
	if r := run(t, nil, "identity", "plc-token", "--data-dir", dir, "--server", srv.base); r.code != 1 || !strings.Contains(r.stderr, "requestPlcOperationSignature") {
		t.Fatalf("plc-token without a request: %v", r)
	}
}
