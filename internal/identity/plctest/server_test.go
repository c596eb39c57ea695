package plctest_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/syntax"

	"stratus/internal/identity"
	"stratus/internal/identity/plctest"
)

// genesis builds a signed genesis op for handle and returns it with its DID.
func genesis(t testing.TB, handle syntax.Handle) (*identity.Operation, syntax.DID) {
	t.Helper()
	rot, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		t.Fatal(err)
	}
	sig, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		t.Fatal(err)
	}
	sigPub, err := sig.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	op, err := identity.NewGenesis(rot, nil, sigPub, handle, "https://pds.example.com")
	if err != nil {
		t.Fatal(err)
	}
	did, err := op.DID()
	if err != nil {
		t.Fatal(err)
	}
	return op, did
}

func do(t testing.TB, method, url string, body []byte) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

func TestEndpoints(t *testing.T) {
	srv := plctest.NewServer(t)
	op, did := genesis(t, "alice.example.com")
	body, err := json.Marshal(op)
	if err != nil {
		t.Fatal(err)
	}
	if status, _, b := do(t, http.MethodPost, srv.URL()+"/"+did.String(), body); status != http.StatusOK {
		t.Fatalf("POST = %d %s", status, b)
	}

	t.Run("document", func(t *testing.T) {
		status, hdr, b := do(t, http.MethodGet, srv.URL()+"/"+did.String(), nil)
		if status != http.StatusOK {
			t.Fatalf("GET = %d %s", status, b)
		}
		if ct := hdr.Get("Content-Type"); !strings.Contains(ct, "json") {
			t.Errorf("Content-Type = %q", ct)
		}
		var doc identity.Document
		if err := json.Unmarshal(b, &doc); err != nil {
			t.Fatal(err)
		}
		want, err := op.Document(did)
		if err != nil {
			t.Fatal(err)
		}
		wantJSON, _ := json.Marshal(want)
		gotJSON, _ := json.Marshal(doc)
		if !bytes.Equal(gotJSON, wantJSON) {
			t.Fatalf("document = %s\nwant %s", gotJSON, wantJSON)
		}
	})

	t.Run("data", func(t *testing.T) {
		status, _, b := do(t, http.MethodGet, srv.URL()+"/"+did.String()+"/data", nil)
		if status != http.StatusOK {
			t.Fatalf("GET data = %d %s", status, b)
		}
		var data struct {
			DID                 string                        `json:"did"`
			RotationKeys        []string                      `json:"rotationKeys"`
			VerificationMethods map[string]string             `json:"verificationMethods"`
			AlsoKnownAs         []string                      `json:"alsoKnownAs"`
			Services            map[string]identity.OpService `json:"services"`
		}
		if err := json.Unmarshal(b, &data); err != nil {
			t.Fatal(err)
		}
		if data.DID != did.String() || len(data.RotationKeys) != 1 || data.RotationKeys[0] != op.RotationKeys[0] ||
			data.VerificationMethods["atproto"] != op.VerificationMethods["atproto"] ||
			len(data.AlsoKnownAs) != 1 || data.AlsoKnownAs[0] != "at://alice.example.com" ||
			data.Services["atproto_pds"] != op.Services["atproto_pds"] {
			t.Fatalf("data = %s", b)
		}
	})

	t.Run("log last", func(t *testing.T) {
		status, _, b := do(t, http.MethodGet, srv.URL()+"/"+did.String()+"/log/last", nil)
		if status != http.StatusOK {
			t.Fatalf("GET log/last = %d %s", status, b)
		}
		var last identity.Operation
		if err := json.Unmarshal(b, &last); err != nil {
			t.Fatal(err)
		}
		got, err := last.DID()
		if err != nil || got != did || last.Sig != op.Sig {
			t.Fatalf("last op DID = %s (%v), sig match %v", got, err, last.Sig == op.Sig)
		}
	})

	t.Run("operation accessor returns a copy", func(t *testing.T) {
		got, ok := srv.Operation(did)
		if !ok {
			t.Fatal("Operation: not found")
		}
		got.AlsoKnownAs[0] = "at://mutated.example.com"
		got.Services["atproto_pds"] = identity.OpService{}
		again, _ := srv.Operation(did)
		if again.AlsoKnownAs[0] != "at://alice.example.com" || again.Services["atproto_pds"].Endpoint == "" {
			t.Fatal("stored operation was mutated through the accessor")
		}
	})
}

func TestErrors(t *testing.T) {
	srv := plctest.NewServer(t)
	op, did := genesis(t, "alice.example.com")
	valid, err := json.Marshal(op)
	if err != nil {
		t.Fatal(err)
	}
	unknown := "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
	tests := []struct {
		name       string
		method     string
		path       string
		body       []byte
		wantStatus int
		wantMsg    string
	}{
		{name: "unknown did", method: http.MethodGet, path: "/" + unknown, wantStatus: http.StatusNotFound, wantMsg: "DID not registered: " + unknown},
		{name: "unknown did data", method: http.MethodGet, path: "/" + unknown + "/data", wantStatus: http.StatusNotFound, wantMsg: "DID not registered: " + unknown},
		{name: "unknown did log", method: http.MethodGet, path: "/" + unknown + "/log/last", wantStatus: http.StatusNotFound, wantMsg: "DID not registered: " + unknown},
		{name: "malformed did", method: http.MethodGet, path: "/not-a-did", wantStatus: http.StatusBadRequest, wantMsg: "Invalid DID"},
		{name: "post did:web", method: http.MethodPost, path: "/did:web:example.com", body: valid, wantStatus: http.StatusBadRequest, wantMsg: "Invalid DID"},
		{name: "post garbage", method: http.MethodPost, path: "/" + did.String(), body: []byte("{nope"), wantStatus: http.StatusBadRequest, wantMsg: "Invalid operation"},
		{name: "post empty object", method: http.MethodPost, path: "/" + did.String(), body: []byte("{}"), wantStatus: http.StatusBadRequest, wantMsg: "Invalid operation"},
		{name: "post wrong did", method: http.MethodPost, path: "/" + unknown, body: valid, wantStatus: http.StatusBadRequest, wantMsg: "does not match DID"},
		{name: "post too large", method: http.MethodPost, path: "/" + did.String(), body: bytes.Repeat([]byte(" "), 1<<20), wantStatus: http.StatusRequestEntityTooLarge, wantMsg: "too large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, hdr, b := do(t, tt.method, srv.URL()+tt.path, tt.body)
			if status != tt.wantStatus {
				t.Fatalf("status = %d, want %d (%s)", status, tt.wantStatus, b)
			}
			if ct := hdr.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
			var msg struct {
				Message string `json:"message"`
			}
			if err := json.Unmarshal(b, &msg); err != nil {
				t.Fatalf("body %s: %v", b, err)
			}
			if !strings.Contains(msg.Message, tt.wantMsg) {
				t.Errorf("message %q lacks %q", msg.Message, tt.wantMsg)
			}
		})
	}
	if srv.Len() != 0 {
		t.Fatalf("Len = %d after only bad submissions", srv.Len())
	}
}

func TestConcurrentUse(t *testing.T) {
	srv := plctest.NewServer(t)
	client := &identity.PLCClient{URL: srv.URL()}
	const n = 16
	type result struct {
		op  *identity.Operation
		did syntax.DID
	}
	results := make([]result, n)
	for i := range results {
		op, did := genesis(t, syntax.Handle(fmt.Sprintf("user%d.example.com", i)))
		results[i] = result{op, did}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for _, r := range results {
		wg.Go(func() {
			if err := client.Submit(t.Context(), r.did, r.op); err != nil {
				errs <- err
				return
			}
			if _, err := client.Document(t.Context(), r.did); err != nil {
				errs <- err
			}
		})
		wg.Go(func() {
			// Reads racing the write see either 404 or the document.
			_, _ = client.Document(t.Context(), r.did)
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if srv.Len() != n {
		t.Fatalf("Len = %d, want %d", srv.Len(), n)
	}
}
