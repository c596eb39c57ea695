package pdstest_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"stratus/internal/pdstest"
)

func TestNewServerDefaults(t *testing.T) {
	s := pdstest.NewServer(t)
	if got, want := s.DID(), "did:web:pds.test"; got != want {
		t.Errorf("DID() = %q, want %q", got, want)
	}
	if got, want := s.Handle(), "alice.test"; got != want {
		t.Errorf("Handle() = %q, want %q", got, want)
	}
	if got, want := s.PublicURL(), "https://pds.test"; got != want {
		t.Errorf("PublicURL() = %q, want %q", got, want)
	}
	if !strings.HasPrefix(s.URL(), "http://127.0.0.1:") || strings.HasSuffix(s.URL(), ":0") {
		t.Errorf("URL() = %q, want http://127.0.0.1:<port>", s.URL())
	}
	cfg := s.Config()
	if cfg.DataDir != s.DataDir() || cfg.AdminToken != s.AdminToken() || cfg.SigningKeyPublic != s.SigningKey().DIDKey() {
		t.Errorf("Config() does not match the accessors")
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("Config() does not validate: %v", err)
	}

	resp, body := s.Raw(t, http.MethodGet, "/xrpc/_health", nil, nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "version") {
		t.Fatalf("health: %d %s", resp.StatusCode, body)
	}

	var desc struct{ DID string }
	s.Call(t, http.MethodGet, "com.atproto.server.describeServer", nil, nil, "", &desc)
	if desc.DID != "did:web:pds.test" {
		t.Errorf("describeServer did = %q", desc.DID)
	}
}

func TestOptions(t *testing.T) {
	s := pdstest.NewServer(t,
		pdstest.WithHostname("other.test"),
		pdstest.WithHandle("bob.test"),
		pdstest.WithDIDMethod("plc"),
		pdstest.WithInitiallyActive(false),
	)
	if !strings.HasPrefix(s.DID(), "did:plc:") || len(s.DID()) != len("did:plc:")+24 {
		t.Errorf("DID() = %q, want a did:plc", s.DID())
	}
	if s.Handle() != "bob.test" || s.PublicURL() != "https://other.test" {
		t.Errorf("Handle() = %q, PublicURL() = %q", s.Handle(), s.PublicURL())
	}
	var st struct {
		Active bool
		Status string
	}
	s.Call(t, http.MethodGet, "com.atproto.sync.getRepoStatus", url.Values{"did": {s.DID()}}, nil, "", &st)
	if st.Active || st.Status != "deactivated" {
		t.Errorf("getRepoStatus = %+v, want deactivated", st)
	}
}

func TestRestartKeepsData(t *testing.T) {
	s := pdstest.NewServer(t)
	w := s.CreateRecord(t, "app.bsky.feed.post", "", pdstest.Post("hello"))
	before := s.LatestCommit(t)
	if w.Commit == nil || w.Commit.CID != before.CID {
		t.Fatalf("write commit %+v, head %+v", w.Commit, before)
	}
	s.Restart(t)
	if after := s.LatestCommit(t); after != before {
		t.Errorf("head after restart = %+v, want %+v", after, before)
	}
	if len(s.LastEventPayload(t, "commit")) == 0 {
		t.Errorf("no commit event payload")
	}
}

func TestMustErrorAndParseError(t *testing.T) {
	s := pdstest.NewServer(t)
	status, body := s.Do(t, http.MethodGet, "com.atproto.identity.resolveHandle", url.Values{"handle": {"nobody.test"}}, nil, "")
	env := pdstest.MustError(t, status, body, http.StatusBadRequest, "HandleNotFound")
	if env.Message == "" {
		t.Errorf("empty message")
	}
	pdstest.MustError(t, status, body, http.StatusBadRequest, "")

	for _, bad := range []string{``, `[]`, `{}`, `{"error":""}`, `{"error":5}`, `{"error":"X","message":5}`, `not json`} {
		if _, err := pdstest.ParseError([]byte(bad)); err == nil {
			t.Errorf("ParseError(%q) accepted", bad)
		}
	}
	if env, err := pdstest.ParseError([]byte(`{"error":"X"}`)); err != nil || env.Error != "X" {
		t.Errorf("ParseError without message = %+v, %v", env, err)
	}
}
