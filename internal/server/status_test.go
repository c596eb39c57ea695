package server_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/syntax"

	"stratus/internal/config"
	"stratus/internal/identity"
	"stratus/internal/pdstest"
	"stratus/internal/status"
)

const getStatus = "app.stratus.admin.getStatus"

func fetchStatus(t *testing.T, s *pdstest.Server) status.Report {
	t.Helper()
	var r status.Report
	s.Call(t, get, getStatus, nil, nil, s.AdminToken(), &r)
	return r
}

// TestStatusAuth checks that only the admin token reads the status
// report: sessions, app-password sessions and anonymous callers are
// refused.
func TestStatusAuth(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t)
	full := s.Login(t, s.Handle(), pdstest.Password)
	ap := createAppPassword(t, s, full.AccessJWT, "status", true)
	apSess := s.Login(t, s.Handle(), ap.Password)
	for _, tc := range []struct {
		name, token string
		status      int
		err         string
	}{
		{"anonymous", "", http.StatusUnauthorized, "AuthMissing"},
		{"garbage", "not-a-token", http.StatusUnauthorized, ""},
		{"account session", full.AccessJWT, http.StatusForbidden, ""},
		{"app-password session", apSess.AccessJWT, http.StatusForbidden, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, b := s.Do(t, get, getStatus, nil, nil, tc.token)
			pdstest.MustError(t, st, b, tc.status, tc.err)
		})
	}
	st, b := s.Do(t, post, getStatus, nil, map[string]any{}, s.AdminToken())
	pdstest.MustError(t, st, b, http.StatusMethodNotAllowed, "")
}

// TestStatusReport checks the report's figures against what the test did.
func TestStatusReport(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t, pdstest.WithConfig(func(c *config.Config) { c.FirehoseRetention = "48h" }))
	before := fetchStatus(t, s)
	if before.Account.DID != s.DID() || before.Account.Handle != s.Handle() || before.Account.Status != "active" {
		t.Fatalf("account = %+v", before.Account)
	}
	if before.Offline || before.StartedAt == nil || before.Version == "" || before.PublicURL != s.PublicURL() {
		t.Errorf("report header = %+v", before)
	}
	if len(before.Problems) != 0 {
		t.Errorf("problems on a fresh server: %v", before.Problems)
	}

	for i := 0; i < 3; i++ {
		s.CreateRecord(t, postColl, "", pdstest.Post("hello"))
	}
	s.CreateRecord(t, profileColl, "self", map[string]any{"$type": profileColl, "displayName": "Alice"})
	sess := s.Login(t, s.Handle(), pdstest.Password)
	createAppPassword(t, s, sess.AccessJWT, "one", false)
	createAppPassword(t, s, sess.AccessJWT, "two", false)
	upload(t, s, sess.AccessJWT, "image/png", pngBytes(t))

	r := fetchStatus(t, s)
	head := s.LatestCommit(t)
	if r.Account.Rev != head.Rev || r.Account.Head != head.CID {
		t.Errorf("rev/head = %s %s, want %s %s", r.Account.Rev, r.Account.Head, head.Rev, head.CID)
	}
	if r.Account.LastCommitAt == nil || time.Since(*r.Account.LastCommitAt) > time.Minute {
		t.Errorf("lastCommitAt = %v", r.Account.LastCommitAt)
	}
	wantColls := []status.Collection{{Name: profileColl, Records: 1}, {Name: postColl, Records: 3}}
	if r.Account.Records != 4 || !equalColls(r.Account.Collections, wantColls) {
		t.Errorf("records = %d %+v, want 4 %+v", r.Account.Records, r.Account.Collections, wantColls)
	}
	if r.Activity.Commits-before.Activity.Commits != 4 {
		t.Errorf("commits went from %d to %d, want +4", before.Activity.Commits, r.Activity.Commits)
	}
	if r.Sessions.Active != 1 || r.Sessions.AppPasswords != 2 || r.Sessions.OAuthGrants != 0 {
		t.Errorf("sessions = %+v", r.Sessions)
	}
	if r.Storage.Blobs != 1 || r.Storage.BlobBytes != int64(len(pngBytes(t))) || r.Storage.BlobStore != "disk" || r.Storage.UnreferencedBlobs != 1 {
		t.Errorf("storage = %+v", r.Storage)
	}
	if r.Storage.DatabaseBytes <= 0 {
		t.Errorf("database size = %d", r.Storage.DatabaseBytes)
	}
	if r.Firehose.LatestSeq != s.LastSeq(t) || r.Firehose.OldestSeq != 1 || r.Firehose.RetentionSeconds != 48*3600 {
		t.Errorf("firehose = %+v, latest stored seq %d", r.Firehose, s.LastSeq(t))
	}
	if len(r.RecentEvents) == 0 || r.RecentEvents[0].Seq != r.Firehose.LatestSeq || r.RecentEvents[0].Type != "commit" ||
		!strings.HasPrefix(r.RecentEvents[0].Detail, "create "+profileColl+"/self") {
		t.Errorf("recent events = %+v", r.RecentEvents)
	}
	id := r.Identity
	if id.Method != "web" || id.SigningKey != s.SigningKey().DIDKey() || id.KeyMatches == nil || !*id.KeyMatches {
		t.Errorf("identity = %+v", id)
	}

	// A deactivated account is reported but is no problem.
	s.Call(t, post, deactivateAccount, nil, map[string]any{}, sess.AccessJWT, nil)
	r = fetchStatus(t, s)
	if r.Account.Status != "deactivated" || len(r.Problems) != 0 || len(r.Warnings) == 0 {
		t.Errorf("deactivated: status %q, problems %v, warnings %v", r.Account.Status, r.Problems, r.Warnings)
	}
}

func equalColls(a, b []status.Collection) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// pngBytes is a minimal PNG header, enough for the type to be sniffed.
func pngBytes(t *testing.T) []byte {
	t.Helper()
	return append([]byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"), make([]byte, 64)...)
}

// fakePLC serves, for any DID, a document naming the key stored in key
// and endpoint (or a 404 when there is no key). The key is set after the
// directory starts, since the server's own key is known only then.
func fakePLC(t *testing.T, key *atomic.Pointer[atcrypto.PublicKey], endpoint string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		did, err := syntax.ParseDID(strings.TrimPrefix(r.URL.Path, "/"))
		k := key.Load()
		if err != nil || k == nil || *k == nil {
			http.Error(w, `{"message":"DID not registered"}`, http.StatusNotFound)
			return
		}
		json.NewEncoder(w).Encode(identity.NewDocument(did, "alice.test", *k, endpoint))
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestStatusIdentity checks the did:plc document check: a document naming
// another key or another server is a problem; an unreachable or unknown
// document is only a warning.
func TestStatusIdentity(t *testing.T) {
	t.Parallel()
	other, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		t.Fatal(err)
	}
	otherPub, _ := other.PublicKey()
	for _, tc := range []struct {
		name      string
		key       func(s *pdstest.Server) atcrypto.PublicKey
		endpoint  string
		problem   string
		keyMatch  *bool
		wantWarns bool
	}{
		{"matching", func(s *pdstest.Server) atcrypto.PublicKey { return s.SigningKey() }, "https://pds.test", "", ptr(true), false},
		{"other key", func(*pdstest.Server) atcrypto.PublicKey { return otherPub }, "https://pds.test", "names signing key", ptr(false), false},
		{"other server", func(s *pdstest.Server) atcrypto.PublicKey { return s.SigningKey() }, "https://elsewhere.example", "points the account at", ptr(true), false},
		{"not registered", func(*pdstest.Server) atcrypto.PublicKey { return nil }, "", "", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var key atomic.Pointer[atcrypto.PublicKey]
			url := fakePLC(t, &key, tc.endpoint)
			s := pdstest.NewServer(t, pdstest.WithDIDMethod("plc"), pdstest.WithConfig(func(c *config.Config) { c.PLCURL = url }))
			k := tc.key(s)
			key.Store(&k)
			r := fetchStatus(t, s)
			got := strings.Join(r.Problems, "\n")
			if (tc.problem == "") != (got == "") || !strings.Contains(got, tc.problem) {
				t.Errorf("problems = %q, want one containing %q", got, tc.problem)
			}
			if (tc.keyMatch == nil) != (r.Identity.KeyMatches == nil) || tc.keyMatch != nil && *tc.keyMatch != *r.Identity.KeyMatches {
				t.Errorf("keyMatches = %v, want %v", r.Identity.KeyMatches, tc.keyMatch)
			}
			if tc.wantWarns != (len(r.Warnings) > 0) {
				t.Errorf("warnings = %v", r.Warnings)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

// TestMetricsOffByDefault checks that no metrics listener exists unless
// metrics-addr is set, and that the public port never serves /metrics.
func TestMetricsOffByDefault(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t)
	if addr := s.Server().MetricsAddr(); addr != "" {
		t.Fatalf("metrics served at %s by default", addr)
	}
	resp, body := s.Raw(t, get, "/metrics", nil, nil)
	if resp.StatusCode != http.StatusNotFound || strings.Contains(string(body), "pds_") {
		t.Errorf("public /metrics = %d %s", resp.StatusCode, body)
	}
	if r := fetchStatus(t, s); r.MetricsAddr != "" {
		t.Errorf("status names metrics at %q", r.MetricsAddr)
	}
}

// TestMetrics scrapes a server with metrics on and checks the series the
// README promises, their labels and a few values.
func TestMetrics(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t, pdstest.WithConfig(func(c *config.Config) { c.MetricsAddr = "127.0.0.1:0" }))
	addr := s.Server().MetricsAddr()
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host != "127.0.0.1" {
		t.Fatalf("metrics address %q", addr)
	}
	s.CreateRecord(t, postColl, "", pdstest.Post("counted"))
	s.Do(t, post, "com.atproto.server.createSession", nil, map[string]string{"identifier": s.Handle(), "password": "wrong"}, "")
	s.Do(t, get, "not-an-nsid", nil, nil, "")
	// A made-up method name must not become a label of its own.
	s.Do(t, get, "com.example.made.up", nil, nil, "")
	s.Raw(t, get, "/no/such/page", nil, nil)
	// The firehose (a hijacked connection) and blob downloads work through
	// the metrics middleware.
	c, ctx := dial(t, s, "?cursor=0")
	if f := readFrame(t, ctx, c); f.mustSeq(t) != 1 {
		t.Errorf("first firehose frame is not seq 1")
	}
	waitSubscribers(t, s, 1)
	tok := s.Login(t, s.Handle(), pdstest.Password).AccessJWT
	ref := upload(t, s, tok, "image/png", pngBytes(t))
	resp, body := s.Raw(t, get, "/xrpc/com.atproto.sync.getBlob?did="+s.DID()+"&cid="+ref.Ref.Link, nil, nil)
	if resp.StatusCode != http.StatusOK || string(body) != string(pngBytes(t)) {
		t.Errorf("getBlob through the middleware = %d, %d bytes", resp.StatusCode, len(body))
	}

	scrape, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer scrape.Body.Close()
	b, _ := io.ReadAll(scrape.Body)
	text := string(b)
	for _, want := range []string{
		`pds_http_requests_total{code="200",method="com.atproto.repo.createRecord"} 1`,
		`pds_http_requests_total{code="401",method="com.atproto.server.createSession"} 1`,
		`pds_http_requests_total{code="400",method="_invalid"} 1`,
		`pds_http_requests_total{code="401",method="_proxied"} 1`,
		`pds_http_requests_total{code="404",method="_other"} 1`,
		`pds_http_request_duration_seconds_bucket{method="com.atproto.repo.createRecord"`,
		`pds_login_failures_total{endpoint="createSession"} 1`,
		`pds_login_failures_total{endpoint="oauth"} 0`,
		"pds_repo_commits_total 2", // the genesis commit and the record
		"pds_firehose_events_total 1",
		"pds_firehose_seq ",
		"pds_firehose_subscribers 1",
		"pds_blobs 1",
		fmt.Sprintf("pds_blob_bytes %d", len(pngBytes(t))),
		`pds_http_requests_total{code="200",method="com.atproto.sync.getBlob"} 1`,
		`pds_http_requests_total{code="200",method="com.atproto.server.createSession"} 1`,
		"pds_database_bytes ",
		"go_goroutines ",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if strings.Contains(text, "com.example.made.up") {
		t.Error("an unserved method name became a label")
	}
	if r := fetchStatus(t, s); r.MetricsAddr != addr {
		t.Errorf("status names metrics at %q, want %q", r.MetricsAddr, addr)
	}
}
