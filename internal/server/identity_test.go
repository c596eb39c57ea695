package server_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"stratus/internal/pdstest"
	"stratus/internal/server"
)

func TestServerEndpoints(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t, pdstest.WithUserDomains(".test"))

	t.Run("describeServer", func(t *testing.T) {
		status, b := s.Do(t, get, describeServer, nil, nil, "")
		if status != http.StatusOK {
			t.Fatalf("status %d: %s", status, b)
		}
		var out struct {
			DID                  string          `json:"did"`
			AvailableUserDomains json.RawMessage `json:"availableUserDomains"`
		}
		decode(t, b, &out)
		if out.DID != "did:web:"+s.Hostname() {
			t.Errorf("did = %q, want did:web:%s", out.DID, s.Hostname())
		}
		var domains []string
		if err := json.Unmarshal(out.AvailableUserDomains, &domains); err != nil || len(domains) != 1 || domains[0] != ".test" {
			t.Errorf("availableUserDomains = %s, want [\".test\"]", out.AvailableUserDomains)
		}
	})

	t.Run("health", func(t *testing.T) {
		resp, b := s.Raw(t, get, "/xrpc/_health", nil, nil)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d: %s", resp.StatusCode, b)
		}
		var out struct{ Version string }
		decode(t, b, &out)
		if out.Version != server.Version || out.Version == "" {
			t.Errorf("version = %q, want %q", out.Version, server.Version)
		}
	})

	t.Run("didDocument", func(t *testing.T) {
		resp, b := s.Raw(t, get, "/.well-known/did.json", nil, nil)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d: %s", resp.StatusCode, b)
		}
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/did+json") && !strings.HasPrefix(ct, "application/json") {
			t.Errorf("Content-Type = %q", ct)
		}
		var doc struct {
			ID          string   `json:"id"`
			AlsoKnownAs []string `json:"alsoKnownAs"`
		}
		decode(t, b, &doc)
		if doc.ID != s.DID() {
			t.Errorf("id = %q, want %q", doc.ID, s.DID())
		}
		if len(doc.AlsoKnownAs) != 1 || doc.AlsoKnownAs[0] != "at://"+s.Handle() {
			t.Errorf("alsoKnownAs = %v", doc.AlsoKnownAs)
		}
		pub, ident := didDocKey(t, s)
		if pub.DIDKey() != s.SigningKey().DIDKey() {
			t.Errorf("document key %s, want signing key %s", pub.DIDKey(), s.SigningKey().DIDKey())
		}
		if got := ident.PDSEndpoint(); got != s.PublicURL() {
			t.Errorf("PDS endpoint = %q, want %q", got, s.PublicURL())
		}
		if h, err := ident.DeclaredHandle(); err != nil || h.String() != s.Handle() {
			t.Errorf("declared handle = %q, %v", h, err)
		}
	})

	t.Run("atprotoDID", func(t *testing.T) {
		for _, tc := range []struct {
			name, host string
			want       string // "" = 404
		}{
			{"handle", "alice.test", s.DID()},
			{"handle upper case", "ALICE.Test", s.DID()},
			{"handle with port", "alice.test:443", s.DID()},
			{"server hostname", s.Hostname(), s.DID()},
			{"loopback IP", "", s.DID()},
			{"unknown host", "bob.test", ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				h := http.Header{}
				if tc.host != "" {
					h.Set("Host", tc.host)
				}
				resp, b := s.Raw(t, get, "/.well-known/atproto-did", h, nil)
				if tc.want == "" {
					if resp.StatusCode != http.StatusNotFound {
						t.Errorf("status %d (%s), want 404", resp.StatusCode, b)
					}
					return
				}
				if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(b)) != tc.want {
					t.Errorf("got %d %q, want 200 %q", resp.StatusCode, b, tc.want)
				}
				if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
					t.Errorf("Content-Type = %q, want text/plain", ct)
				}
			})
		}
	})

	t.Run("resolveHandle", func(t *testing.T) {
		for _, tc := range []struct {
			name, handle string
			status       int
			err          string
		}{
			{"local", "alice.test", 200, ""},
			{"case-insensitive", "Alice.TEST", 200, ""},
			{"unknown", "bob.test", 400, "HandleNotFound"},
			{"invalid", "not a handle", 400, "InvalidRequest"},
			{"missing", "", 400, "InvalidRequest"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				v := q()
				if tc.handle != "" {
					v.Set("handle", tc.handle)
				}
				status, b := s.Do(t, get, resolveHandle, v, nil, "")
				if tc.status != http.StatusOK {
					pdstest.MustError(t, status, b, tc.status, tc.err)
					return
				}
				var out struct{ DID string }
				decode(t, b, &out)
				if status != http.StatusOK || out.DID != s.DID() {
					t.Errorf("got %d %s, want did %s", status, b, s.DID())
				}
			})
		}
	})

	t.Run("robots", func(t *testing.T) {
		resp, b := s.Raw(t, get, "/robots.txt", nil, nil)
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), "User-agent") {
			t.Errorf("got %d %q", resp.StatusCode, b)
		}
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
			t.Errorf("Content-Type = %q", ct)
		}
	})

	t.Run("home", func(t *testing.T) {
		resp, b := s.Raw(t, get, "/", nil, nil)
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), "/xrpc/") {
			t.Errorf("got %d %q", resp.StatusCode, b)
		}
	})

	t.Run("unknown path", func(t *testing.T) {
		resp, b := s.Raw(t, get, "/nothing/here", nil, nil)
		pdstest.MustError(t, resp.StatusCode, b, http.StatusNotFound, "NotFound")
	})

	t.Run("cors", func(t *testing.T) {
		for _, tc := range []struct {
			name, method, path string
			header             http.Header
			status             int
		}{
			{"query", get, "/xrpc/" + describeServer, http.Header{"Origin": {"https://app.example"}}, 200},
			{"error answer", get, "/xrpc/" + getRecord, http.Header{"Origin": {"https://app.example"}}, 400},
			{"well-known", get, "/.well-known/did.json", nil, 200},
			{"preflight", http.MethodOptions, "/xrpc/" + createRecord, http.Header{
				"Origin":                         {"https://app.example"},
				"Access-Control-Request-Method":  {"POST"},
				"Access-Control-Request-Headers": {"authorization,content-type,atproto-proxy"},
			}, 204},
		} {
			t.Run(tc.name, func(t *testing.T) {
				resp, b := s.Raw(t, tc.method, tc.path, tc.header, nil)
				if resp.StatusCode != tc.status {
					t.Fatalf("status %d (%s), want %d", resp.StatusCode, b, tc.status)
				}
				if got := resp.Header.Get("Access-Control-Allow-Origin"); got != "*" {
					t.Errorf("Access-Control-Allow-Origin = %q, want *", got)
				}
				if tc.method != http.MethodOptions {
					return
				}
				if len(b) != 0 {
					t.Errorf("preflight body %q, want empty", b)
				}
				if got, want := resp.Header.Get("Access-Control-Allow-Headers"), tc.header.Get("Access-Control-Request-Headers"); got != want {
					t.Errorf("Access-Control-Allow-Headers = %q, want %q", got, want)
				}
				if got := resp.Header.Get("Access-Control-Allow-Methods"); !strings.Contains(got, "POST") || !strings.Contains(got, "GET") {
					t.Errorf("Access-Control-Allow-Methods = %q", got)
				}
			})
		}
	})
}

func TestDescribeServerWithoutUserDomains(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t)
	status, b := s.Do(t, get, describeServer, nil, nil, "")
	if status != http.StatusOK {
		t.Fatalf("status %d: %s", status, b)
	}
	var out map[string]json.RawMessage
	decode(t, b, &out)
	if got := string(out["availableUserDomains"]); got != "[]" {
		t.Errorf("availableUserDomains = %s, want []", got)
	}
}

func TestDIDPLCAccount(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t, pdstest.WithDIDMethod("plc"))

	t.Run("no did.json", func(t *testing.T) {
		resp, b := s.Raw(t, get, "/.well-known/did.json", nil, nil)
		pdstest.MustError(t, resp.StatusCode, b, http.StatusNotFound, "NotFound")
	})
	t.Run("atproto-did", func(t *testing.T) {
		resp, b := s.Raw(t, get, "/.well-known/atproto-did", http.Header{"Host": {s.Handle()}}, nil)
		if resp.StatusCode != http.StatusOK || string(b) != s.DID() {
			t.Errorf("got %d %q, want %s", resp.StatusCode, b, s.DID())
		}
	})
	t.Run("describeServer keeps the server DID", func(t *testing.T) {
		var out struct{ DID string }
		s.Call(t, get, describeServer, nil, nil, "", &out)
		if out.DID != "did:web:"+s.Hostname() {
			t.Errorf("did = %q", out.DID)
		}
	})
	t.Run("describeRepo", func(t *testing.T) {
		var out struct {
			DID    string `json:"did"`
			DIDDoc struct {
				ID string `json:"id"`
			} `json:"didDoc"`
		}
		s.Call(t, get, describeRepo, q("repo", s.DID()), nil, "", &out)
		if out.DID != s.DID() || out.DIDDoc.ID != s.DID() {
			t.Errorf("describeRepo = %+v", out)
		}
	})
	t.Run("writes", func(t *testing.T) {
		w := s.CreateRecord(t, postColl, "", pdstest.Post("plc"))
		if !strings.HasPrefix(w.URI, "at://"+s.DID()+"/") {
			t.Errorf("uri = %q", w.URI)
		}
		verifyFullRepo(t, s.DID(), s.SigningKey(), fetchRepo(t, s))
	})
}
