package identity_test

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	indigoid "github.com/bluesky-social/indigo/atproto/identity"
	"github.com/bluesky-social/indigo/atproto/syntax"

	"stratus/internal/identity"
)

func TestNewDocumentGolden(t *testing.T) {
	const (
		k256Multibase = "zQ3shhiASLv8GN7ob3iWqsAxP7nE95LUPWsNEb2jTfW7e2yCt"
		p256Multibase = "zDnaembgSGUhZULN2Caob4HLJPaxBh92N7rtH21TErzqf8HQo"
		did           = syntax.DID("did:plc:ewvi7nxzyoun6zhxrhs64oiz")
	)
	tests := []struct {
		name      string
		multibase string
		handle    syntax.Handle
		pdsURL    string
		want      string
	}{
		{
			name:      "k256",
			multibase: k256Multibase,
			handle:    "alice.example.com",
			pdsURL:    "https://pds.example.com",
			want: `{
				"@context": [
					"https://www.w3.org/ns/did/v1",
					"https://w3id.org/security/multikey/v1",
					"https://w3id.org/security/suites/secp256k1-2019/v1"
				],
				"id": "did:plc:ewvi7nxzyoun6zhxrhs64oiz",
				"alsoKnownAs": ["at://alice.example.com"],
				"verificationMethod": [{
					"id": "did:plc:ewvi7nxzyoun6zhxrhs64oiz#atproto",
					"type": "Multikey",
					"controller": "did:plc:ewvi7nxzyoun6zhxrhs64oiz",
					"publicKeyMultibase": "` + k256Multibase + `"
				}],
				"service": [{
					"id": "#atproto_pds",
					"type": "AtprotoPersonalDataServer",
					"serviceEndpoint": "https://pds.example.com"
				}]
			}`,
		},
		{
			name:      "p256 mixed-case handle and trailing slash",
			multibase: p256Multibase,
			handle:    "Alice.Example.COM",
			pdsURL:    "http://localhost:2583/",
			want: `{
				"@context": [
					"https://www.w3.org/ns/did/v1",
					"https://w3id.org/security/multikey/v1",
					"https://w3id.org/security/suites/ecdsa-2019/v1"
				],
				"id": "did:plc:ewvi7nxzyoun6zhxrhs64oiz",
				"alsoKnownAs": ["at://alice.example.com"],
				"verificationMethod": [{
					"id": "did:plc:ewvi7nxzyoun6zhxrhs64oiz#atproto",
					"type": "Multikey",
					"controller": "did:plc:ewvi7nxzyoun6zhxrhs64oiz",
					"publicKeyMultibase": "` + p256Multibase + `"
				}],
				"service": [{
					"id": "#atproto_pds",
					"type": "AtprotoPersonalDataServer",
					"serviceEndpoint": "http://localhost:2583/"
				}]
			}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key, err := atcrypto.ParsePublicMultibase(tt.multibase)
			if err != nil {
				t.Fatalf("parse key: %v", err)
			}
			doc := identity.NewDocument(did, tt.handle, key, tt.pdsURL)
			got, err := json.Marshal(doc)
			if err != nil {
				t.Fatal(err)
			}
			var gotMap, wantMap map[string]any
			if err := json.Unmarshal(got, &gotMap); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal([]byte(tt.want), &wantMap); err != nil {
				t.Fatalf("bad golden: %v", err)
			}
			if !reflect.DeepEqual(gotMap, wantMap) {
				t.Fatalf("document mismatch\n got: %s\nwant: %s", got, tt.want)
			}

			// indigo parses it back to the same key, handle and endpoint.
			var idoc indigoid.DIDDocument
			if err := json.Unmarshal(got, &idoc); err != nil {
				t.Fatalf("indigo decode: %v", err)
			}
			ident := indigoid.ParseIdentity(&idoc)
			if ident.DID != did {
				t.Errorf("DID = %s", ident.DID)
			}
			pub, err := ident.PublicKey()
			if err != nil {
				t.Fatalf("indigo PublicKey: %v", err)
			}
			if !pub.Equal(key) {
				t.Errorf("indigo PublicKey = %s, want %s", pub.Multibase(), key.Multibase())
			}
			handle, err := ident.DeclaredHandle()
			if err != nil {
				t.Fatalf("indigo DeclaredHandle: %v", err)
			}
			if handle != tt.handle.Normalize() {
				t.Errorf("DeclaredHandle = %s, want %s", handle, tt.handle.Normalize())
			}
			if ep := ident.PDSEndpoint(); ep != tt.pdsURL {
				t.Errorf("PDSEndpoint = %q, want %q", ep, tt.pdsURL)
			}
		})
	}
}

func TestDocumentJSONRoundTrip(t *testing.T) {
	k := newTestKeys(t)
	doc := identity.NewDocument("did:plc:ewvi7nxzyoun6zhxrhs64oiz", testHandle, k.signingPK, testPDSURL)
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	var back identity.Document
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, doc) {
		t.Fatalf("round-trip mismatch:\n got %+v\nwant %+v", back, doc)
	}
}

func TestOperationDocumentMatchesNewDocument(t *testing.T) {
	k := newTestKeys(t)
	op := newTestGenesis(t, k)
	did, err := op.DID()
	if err != nil {
		t.Fatal(err)
	}
	got, err := op.Document(did)
	if err != nil {
		t.Fatalf("Document: %v", err)
	}
	want := identity.NewDocument(did, testHandle, k.signingPK, testPDSURL)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("op.Document = %+v\nNewDocument = %+v", got, want)
	}

	t.Run("bad verification method", func(t *testing.T) {
		op.VerificationMethods["atproto"] = "did:key:nope"
		if _, err := op.Document(did); err == nil {
			t.Fatal("Document accepted an unparseable key")
		}
	})
}
