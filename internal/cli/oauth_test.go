//go:build unix

package cli_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"stratus/internal/config"
	"stratus/internal/oauth"
	"stratus/internal/pdstest"
	"stratus/internal/sqlite"
)

// TestOAuthListRevoke lists a grant with pds oauth list and revokes it with
// pds oauth revoke, against a running server.
func TestOAuthListRevoke(t *testing.T) {
	srv := pdstest.NewServer(t)
	db, err := sqlite.Open(context.Background(), filepath.Join(srv.DataDir(), config.DatabaseFile))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	now := time.Now()
	g := oauth.Grant{ID: "grant-test1", DID: "did:web:pds.test", ClientID: "https://app.example.com/client-metadata.json",
		ClientName: "Example App", Scope: "atproto transition:generic", DPoPJKT: "jkt", AuthMethod: "none",
		CodeHash: "c1", CodeChallenge: "ch", AccessHash: "a1", AccessExpiresAt: now.Add(time.Hour),
		RefreshHash: "r1", RefreshExpiresAt: now.Add(24 * time.Hour), CreatedAt: now, UpdatedAt: now}
	if err := db.OAuth().CreateGrant(context.Background(), g); err != nil {
		t.Fatal(err)
	}
	flags := []string{"--server", srv.URL(), "--admin-token", srv.AdminToken()}
	r := mustRun(t, nil, append([]string{"oauth", "list"}, flags...)...)
	if !strings.Contains(r.stdout, "grant-test1") || !strings.Contains(r.stdout, "Example App") {
		t.Fatalf("list:\n%s", r.stdout)
	}
	r = mustRun(t, nil, append([]string{"oauth", "list", "--json"}, flags...)...)
	var grants []map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &grants); err != nil || len(grants) != 1 || grants[0]["id"] != "grant-test1" {
		t.Fatalf("list --json: %v\n%s", err, r.stdout)
	}
	r = mustRun(t, nil, append([]string{"oauth", "revoke", "grant-test1"}, flags...)...)
	if !strings.Contains(r.stdout, "Revoked") {
		t.Fatalf("revoke:\n%s", r.stdout)
	}
	r = mustRun(t, nil, append([]string{"oauth", "list"}, flags...)...)
	if !strings.Contains(r.stdout, "No OAuth grants.") {
		t.Fatalf("list after revoke:\n%s", r.stdout)
	}
	if r := run(t, nil, append([]string{"oauth", "revoke", "grant-test1"}, flags...)...); r.code == 0 || !strings.Contains(r.stderr, "No OAuth grant") {
		t.Fatalf("revoking an unknown grant: %d\n%s", r.code, r.stderr)
	}
}
