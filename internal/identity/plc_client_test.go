package identity_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	indigoid "github.com/bluesky-social/indigo/atproto/identity"
	"github.com/bluesky-social/indigo/atproto/syntax"

	"stratus/internal/identity"
	"stratus/internal/identity/plctest"
)

func TestSubmitAndResolve(t *testing.T) {
	ctx := t.Context()
	srv := plctest.NewServer(t)
	client := &identity.PLCClient{URL: srv.URL()}
	k := newTestKeys(t)
	op := newTestGenesis(t, k)
	did, err := op.DID()
	if err != nil {
		t.Fatal(err)
	}
	if err := client.Submit(ctx, did, op); err != nil {
		t.Fatalf("Submit: %v", err)
	}

	t.Run("indigo resolver", func(t *testing.T) {
		dir := &indigoid.BaseDirectory{PLCURL: srv.URL(), SkipHandleVerification: true}
		ident, err := dir.LookupDID(ctx, did)
		if err != nil {
			t.Fatalf("LookupDID: %v", err)
		}
		if ident.DID != did {
			t.Errorf("DID = %s, want %s", ident.DID, did)
		}
		if ep := ident.PDSEndpoint(); ep != testPDSURL {
			t.Errorf("PDSEndpoint = %q, want %q", ep, testPDSURL)
		}
		pub, err := ident.PublicKey()
		if err != nil {
			t.Fatalf("PublicKey: %v", err)
		}
		if !pub.Equal(k.signingPK) {
			t.Errorf("PublicKey = %s, want %s", pub.DIDKey(), k.signingPK.DIDKey())
		}
		handle, err := ident.DeclaredHandle()
		if err != nil {
			t.Fatalf("DeclaredHandle: %v", err)
		}
		if handle != testHandle {
			t.Errorf("DeclaredHandle = %s, want %s", handle, testHandle)
		}
	})

	t.Run("client document", func(t *testing.T) {
		doc, err := client.Document(ctx, did)
		if err != nil {
			t.Fatalf("Document: %v", err)
		}
		want := identity.NewDocument(did, testHandle, k.signingPK, testPDSURL)
		gotJSON, _ := json.Marshal(doc)
		wantJSON, _ := json.Marshal(want)
		if string(gotJSON) != string(wantJSON) {
			t.Fatalf("Document = %s\nwant %s", gotJSON, wantJSON)
		}
	})

	t.Run("resubmit rejected", func(t *testing.T) {
		var perr *identity.PLCError
		if err := client.Submit(ctx, did, op); !errors.As(err, &perr) || perr.StatusCode != http.StatusBadRequest {
			t.Fatalf("second Submit = %v, want 400 PLCError", err)
		}
	})
}

func TestSubmitRejected(t *testing.T) {
	ctx := t.Context()
	srv := plctest.NewServer(t)
	client := &identity.PLCClient{URL: srv.URL()}
	k := newTestKeys(t)

	other := newTestGenesis(t, k)
	otherDID, err := other.DID()
	if err != nil {
		t.Fatal(err)
	}
	prev := "bafyreiadih3ot3zecxp3yghygj2mwxh3szrrifwer2z4iodazbrtuvmmgm"

	tests := []struct {
		name string
		// prepare mutates a fresh signed genesis op and returns the DID to post to.
		prepare func(op *identity.Operation, did syntax.DID) syntax.DID
		wantMsg string
	}{
		{
			name: "tampered handle",
			prepare: func(op *identity.Operation, did syntax.DID) syntax.DID {
				op.AlsoKnownAs = []string{"at://mallory.example.com"}
				return did
			},
			wantMsg: "signature",
		},
		{
			name: "tampered handle with matching did",
			prepare: func(op *identity.Operation, _ syntax.DID) syntax.DID {
				op.AlsoKnownAs = []string{"at://mallory.example.com"}
				d, err := op.DID()
				if err != nil {
					t.Fatal(err)
				}
				return d
			},
			wantMsg: "signature",
		},
		{
			name:    "wrong did path",
			prepare: func(*identity.Operation, syntax.DID) syntax.DID { return otherDID },
			wantMsg: "does not match DID",
		},
		{
			name: "signed by non-rotation key",
			prepare: func(op *identity.Operation, _ syntax.DID) syntax.DID {
				if err := op.Sign(k.signing); err != nil {
					t.Fatal(err)
				}
				d, err := op.DID()
				if err != nil {
					t.Fatal(err)
				}
				return d
			},
			wantMsg: "no rotation key matches",
		},
		{
			name: "prev set",
			prepare: func(op *identity.Operation, did syntax.DID) syntax.DID {
				op.Prev = &prev
				return did
			},
			wantMsg: "not a genesis operation",
		},
		{
			name: "unsigned",
			prepare: func(op *identity.Operation, did syntax.DID) syntax.DID {
				op.Sig = ""
				return did
			},
			wantMsg: "not signed",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			op := newTestGenesis(t, k)
			did, err := op.DID()
			if err != nil {
				t.Fatal(err)
			}
			target := tt.prepare(op, did)
			err = client.Submit(ctx, target, op)
			var perr *identity.PLCError
			if !errors.As(err, &perr) {
				t.Fatalf("Submit = %v, want *PLCError", err)
			}
			if perr.StatusCode != http.StatusBadRequest {
				t.Errorf("status = %d, want 400", perr.StatusCode)
			}
			if !strings.Contains(perr.Message, tt.wantMsg) {
				t.Errorf("message %q lacks %q", perr.Message, tt.wantMsg)
			}
			if !strings.HasPrefix(err.Error(), "submit plc op: plc directory: status 400: ") {
				t.Errorf("error %q lacks context or status", err)
			}
			if _, err := client.Document(ctx, target); !errors.Is(err, identity.ErrNotFound) {
				t.Errorf("rejected DID resolves: %v", err)
			}
		})
	}
	if n := srv.Len(); n != 0 {
		t.Fatalf("stand-in stored %d DIDs, want 0", n)
	}
}

func TestDocumentNotFound(t *testing.T) {
	srv := plctest.NewServer(t)
	client := &identity.PLCClient{URL: srv.URL() + "/"}
	did := syntax.DID("did:plc:ewvi7nxzyoun6zhxrhs64oiz")
	_, err := client.Document(t.Context(), did)
	if !errors.Is(err, identity.ErrNotFound) {
		t.Fatalf("Document = %v, want ErrNotFound", err)
	}
	if !strings.Contains(err.Error(), "404") || !strings.Contains(err.Error(), "DID not registered: "+did.String()) {
		t.Errorf("error %q lacks status or message", err)
	}
}

func TestPLCClientErrors(t *testing.T) {
	did := syntax.DID("did:plc:ewvi7nxzyoun6zhxrhs64oiz")
	k := newTestKeys(t)
	op := newTestGenesis(t, k)

	tests := []struct {
		name    string
		handler http.HandlerFunc
		call    func(ctx context.Context, c *identity.PLCClient) error
		check   func(t *testing.T, err error)
	}{
		{
			name: "plain text error body is trimmed",
			handler: func(w http.ResponseWriter, r *http.Request) {
				http.Error(w, "  upstream\n\n exploded  "+strings.Repeat("x", 2000), http.StatusBadGateway)
			},
			call: func(ctx context.Context, c *identity.PLCClient) error { return c.Submit(ctx, did, op) },
			check: func(t *testing.T, err error) {
				var perr *identity.PLCError
				if !errors.As(err, &perr) || perr.StatusCode != http.StatusBadGateway {
					t.Fatalf("err = %v, want 502 PLCError", err)
				}
				if !strings.HasPrefix(perr.Message, "upstream exploded x") || len(perr.Message) > 600 {
					t.Fatalf("message not trimmed: %q", perr.Message)
				}
				if errors.Is(err, identity.ErrNotFound) {
					t.Fatal("502 matches ErrNotFound")
				}
			},
		},
		{
			name: "json error message",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusBadRequest)
				_, _ = w.Write([]byte(`{"message":"Invalid signature"}`))
			},
			call: func(ctx context.Context, c *identity.PLCClient) error { return c.Submit(ctx, did, op) },
			check: func(t *testing.T, err error) {
				if err == nil || err.Error() != "submit plc op: plc directory: status 400: Invalid signature" {
					t.Fatalf("err = %v", err)
				}
			},
		},
		{
			name: "oversized document",
			handler: func(w http.ResponseWriter, r *http.Request) {
				_, _ = w.Write([]byte(`{"id":"` + did.String() + `","alsoKnownAs":["`))
				_, _ = w.Write([]byte(strings.Repeat("a", 2<<20)))
				_, _ = w.Write([]byte(`"]}`))
			},
			call: func(ctx context.Context, c *identity.PLCClient) error {
				_, err := c.Document(ctx, did)
				return err
			},
			check: func(t *testing.T, err error) {
				if err == nil || !strings.Contains(err.Error(), "exceeds") {
					t.Fatalf("err = %v, want size error", err)
				}
			},
		},
		{
			name: "document for another did",
			handler: func(w http.ResponseWriter, r *http.Request) {
				_, _ = w.Write([]byte(`{"id":"did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"}`))
			},
			call: func(ctx context.Context, c *identity.PLCClient) error {
				_, err := c.Document(ctx, did)
				return err
			},
			check: func(t *testing.T, err error) {
				if err == nil || !strings.Contains(err.Error(), "does not match") {
					t.Fatalf("err = %v, want mismatch error", err)
				}
			},
		},
		{
			name: "request shape",
			handler: func(w http.ResponseWriter, r *http.Request) {
				var got identity.Operation
				if r.Method != http.MethodPost || r.URL.Path != "/"+did.String() ||
					r.Header.Get("Content-Type") != "application/json" ||
					json.NewDecoder(r.Body).Decode(&got) != nil || got.Sig != op.Sig {
					http.Error(w, "unexpected request", http.StatusTeapot)
					return
				}
				w.WriteHeader(http.StatusOK)
			},
			call: func(ctx context.Context, c *identity.PLCClient) error { return c.Submit(ctx, did, op) },
			check: func(t *testing.T, err error) {
				if err != nil {
					t.Fatalf("Submit: %v", err)
				}
			},
		},
		{
			name: "context canceled",
			handler: func(w http.ResponseWriter, r *http.Request) {
				// Drain the body so the server notices the client going away.
				_, _ = io.Copy(io.Discard, r.Body)
				select {
				case <-r.Context().Done():
				case <-time.After(10 * time.Second):
				}
			},
			call: func(ctx context.Context, c *identity.PLCClient) error {
				ctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
				defer cancel()
				return c.Submit(ctx, did, op)
			},
			check: func(t *testing.T, err error) {
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("err = %v, want DeadlineExceeded", err)
				}
			},
		},
		{
			name:    "not a did:plc",
			handler: func(w http.ResponseWriter, r *http.Request) { t.Error("request sent for did:web") },
			call: func(ctx context.Context, c *identity.PLCClient) error {
				return c.Submit(ctx, "did:web:example.com", op)
			},
			check: func(t *testing.T, err error) {
				if err == nil {
					t.Fatal("Submit accepted a did:web")
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hs := httptest.NewServer(tt.handler)
			t.Cleanup(hs.Close)
			c := &identity.PLCClient{URL: hs.URL, HTTPClient: hs.Client()}
			tt.check(t, tt.call(t.Context(), c))
		})
	}
}
