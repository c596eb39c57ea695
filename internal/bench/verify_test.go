package bench

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/bluesky-social/indigo/atproto/atcrypto"

	"stratus/internal/pdstest"
)

// exportOf writes n posts to a test server and returns its getRepo CAR and
// the signing key createSession's DID document names.
func exportOf(t *testing.T, n int) (*pdstest.Server, []byte, atcrypto.PublicKey) {
	t.Helper()
	s := pdstest.NewServer(t)
	var sess session
	s.Call(t, http.MethodPost, "com.atproto.server.createSession", nil,
		map[string]string{"identifier": s.Handle(), "password": pdstest.Password}, "", &sess)
	key, err := signingKey(sess.DIDDoc)
	if err != nil || key == nil {
		t.Fatalf("signingKey(%s) = %v, %v", sess.DIDDoc, key, err)
	}
	if key.DIDKey() != s.SigningKey().DIDKey() {
		t.Fatalf("DID document key %s, server signs with %s", key.DIDKey(), s.SigningKey().DIDKey())
	}
	for i := range n {
		s.Call(t, http.MethodPost, "com.atproto.repo.createRecord", nil, map[string]any{
			"repo": s.DID(), "collection": PostCollection, "record": post("test", i),
		}, sess.AccessJwt, nil)
	}
	resp, car := s.Raw(t, http.MethodGet, "/xrpc/com.atproto.sync.getRepo?"+url.Values{"did": {s.DID()}}.Encode(), nil, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("getRepo: %d %s", resp.StatusCode, car)
	}
	return s, car, key
}

func TestVerifyExport(t *testing.T) {
	s, car, key := exportOf(t, 40)
	chk, err := verifyExport(t.Context(), car, s.DID(), key)
	if err != nil {
		t.Fatal(err)
	}
	if chk.Records != 40 || !chk.Signature || chk.Blocks < 42 || chk.Rev == "" {
		t.Errorf("check = %+v, want 40 records, signature checked", chk)
	}
	if chk, err := verifyExport(t.Context(), car, s.DID(), nil); err != nil || chk.Signature {
		t.Errorf("without a key: %+v, %v", chk, err)
	}

	other, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		t.Fatal(err)
	}
	otherPub, _ := other.PublicKey()
	flipped := bytes.Clone(car)
	flipped[len(flipped)-1] ^= 1 // inside the last block's data
	for _, tt := range []struct {
		name string
		car  []byte
		did  string
		key  atcrypto.PublicKey
		want string
	}{
		{"another key", car, s.DID(), otherPub, "signature"},
		{"another account", car, "did:web:other.test", key, "want did:web:other.test"},
		{"a corrupted block", flipped, s.DID(), key, "read CAR block"},
		// Cut mid-block the reader fails; cut between blocks records or
		// MST nodes are missing.
		{"truncated", car[:len(car)/2], s.DID(), key, "read CAR block|missing|MST|load repository"},
		{"not a CAR", []byte("{}"), s.DID(), key, "header"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := verifyExport(t.Context(), tt.car, tt.did, tt.key)
			if err == nil || !slices.ContainsFunc(strings.Split(tt.want, "|"), func(w string) bool { return strings.Contains(err.Error(), w) }) {
				t.Errorf("err = %v, want one mentioning %q", err, tt.want)
			}
		})
	}
}

func TestSigningKeyWithoutDocument(t *testing.T) {
	for _, doc := range []string{"", "null", `{"id":"did:web:x.test"}`} {
		k, err := signingKey(json.RawMessage(doc))
		if k != nil || err != nil {
			t.Errorf("signingKey(%q) = %v, %v; want no key and no error", doc, k, err)
		}
	}
	if _, err := signingKey(json.RawMessage(`[1]`)); err == nil {
		t.Error("a malformed document gave no error")
	}
}
