package identity_test

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/syntax"

	"stratus/internal/identity"
)

const (
	testHandle = syntax.Handle("alice.example.com")
	testPDSURL = "https://pds.example.com"
)

// testKeys holds freshly generated keys for one genesis operation.
type testKeys struct {
	rotation   *atcrypto.PrivateKeyK256
	rotationPK atcrypto.PublicKey
	signing    *atcrypto.PrivateKeyK256
	signingPK  atcrypto.PublicKey
}

func newTestKeys(t testing.TB) testKeys {
	t.Helper()
	rot, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		t.Fatalf("generate rotation key: %v", err)
	}
	rotPub, err := rot.PublicKey()
	if err != nil {
		t.Fatalf("rotation public key: %v", err)
	}
	sig, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		t.Fatalf("generate signing key: %v", err)
	}
	sigPub, err := sig.PublicKey()
	if err != nil {
		t.Fatalf("signing public key: %v", err)
	}
	return testKeys{rotation: rot, rotationPK: rotPub, signing: sig, signingPK: sigPub}
}

func newTestGenesis(t testing.TB, k testKeys) *identity.Operation {
	t.Helper()
	op, err := identity.NewGenesis(k.rotation, nil, k.signingPK, testHandle, testPDSURL)
	if err != nil {
		t.Fatalf("NewGenesis: %v", err)
	}
	return op
}

func TestGenesisRoundTrip(t *testing.T) {
	k := newTestKeys(t)
	op := newTestGenesis(t, k)
	did, err := op.DID()
	if err != nil {
		t.Fatalf("DID: %v", err)
	}

	t.Run("did format", func(t *testing.T) {
		s := did.String()
		id, ok := strings.CutPrefix(s, "did:plc:")
		if !ok {
			t.Fatalf("DID %q lacks did:plc: prefix", s)
		}
		if len(id) != 24 {
			t.Fatalf("identifier %q has %d chars, want 24", id, len(id))
		}
		for _, c := range id {
			if (c < 'a' || c > 'z') && (c < '2' || c > '7') {
				t.Fatalf("identifier %q has non-base32 char %q", id, c)
			}
		}
	})

	t.Run("fields", func(t *testing.T) {
		if op.Type != "plc_operation" {
			t.Errorf("type = %q", op.Type)
		}
		if len(op.RotationKeys) != 1 || op.RotationKeys[0] != k.rotationPK.DIDKey() {
			t.Errorf("rotationKeys = %v, want [%s]", op.RotationKeys, k.rotationPK.DIDKey())
		}
		if got := op.VerificationMethods["atproto"]; got != k.signingPK.DIDKey() || len(op.VerificationMethods) != 1 {
			t.Errorf("verificationMethods = %v", op.VerificationMethods)
		}
		if len(op.AlsoKnownAs) != 1 || op.AlsoKnownAs[0] != "at://alice.example.com" {
			t.Errorf("alsoKnownAs = %v", op.AlsoKnownAs)
		}
		want := identity.OpService{Type: "AtprotoPersonalDataServer", Endpoint: testPDSURL}
		if got := op.Services["atproto_pds"]; got != want || len(op.Services) != 1 {
			t.Errorf("services = %v", op.Services)
		}
		if op.Prev != nil {
			t.Errorf("prev = %v, want nil", *op.Prev)
		}
		sig, err := base64.RawURLEncoding.DecodeString(op.Sig)
		if err != nil || len(sig) != 64 {
			t.Errorf("sig %q: %d bytes, err %v; want 64-byte unpadded base64url", op.Sig, len(sig), err)
		}
	})

	t.Run("json shape", func(t *testing.T) {
		b, err := json.Marshal(op)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		for _, key := range []string{"type", "rotationKeys", "verificationMethods", "alsoKnownAs", "services", "prev", "sig"} {
			if _, ok := m[key]; !ok {
				t.Errorf("JSON lacks %q: %s", key, b)
			}
		}
		if m["prev"] != nil {
			t.Errorf("prev = %v, want null", m["prev"])
		}
		if len(m) != 7 {
			t.Errorf("JSON has %d fields, want 7: %s", len(m), b)
		}
	})

	t.Run("signature verifies with rotation key", func(t *testing.T) {
		if err := op.VerifySignature(k.rotationPK); err != nil {
			t.Fatalf("VerifySignature: %v", err)
		}
	})

	t.Run("signature fails with other key", func(t *testing.T) {
		err := op.VerifySignature(k.signingPK)
		if !errors.Is(err, atcrypto.ErrInvalidSignature) {
			t.Fatalf("VerifySignature with signing key = %v, want ErrInvalidSignature", err)
		}
	})

	t.Run("did stable across json round-trip", func(t *testing.T) {
		b, err := json.Marshal(op)
		if err != nil {
			t.Fatal(err)
		}
		var decoded identity.Operation
		if err := json.Unmarshal(b, &decoded); err != nil {
			t.Fatal(err)
		}
		got, err := decoded.DID()
		if err != nil {
			t.Fatalf("DID after round-trip: %v", err)
		}
		if got != did {
			t.Fatalf("DID after round-trip = %s, want %s", got, did)
		}
		if err := decoded.VerifySignature(k.rotationPK); err != nil {
			t.Fatalf("VerifySignature after round-trip: %v", err)
		}
	})

	t.Run("verify genesis", func(t *testing.T) {
		got, err := op.VerifyGenesis()
		if err != nil {
			t.Fatalf("VerifyGenesis: %v", err)
		}
		if got != did {
			t.Fatalf("VerifyGenesis DID = %s, want %s", got, did)
		}
	})

	t.Run("signatures differ but both verify", func(t *testing.T) {
		// ECDSA signing is randomized, so a second genesis op for the same
		// inputs is a different DID; both must verify.
		op2 := newTestGenesis(t, k)
		if err := op2.VerifySignature(k.rotationPK); err != nil {
			t.Fatal(err)
		}
	})
}

// TestKnownGenesisVector checks DAG-CBOR encoding, DID derivation and
// signature verification against a genesis operation from the public
// did-method-plc test data.
func TestKnownGenesisVector(t *testing.T) {
	const opJSON = `{
		"sig": "IypAT0szH_8Ygl7QrnXZrxemIcg_RkW_GyYbjih_9BEe5DRGgLxmQGeWsvB0TfDqm50c0xB8mGraOf25IA25qA",
		"prev": null,
		"type": "plc_operation",
		"services": {},
		"alsoKnownAs": ["at://op0"],
		"rotationKeys": [
			"did:key:zQ3shhiASLv8GN7ob3iWqsAxP7nE95LUPWsNEb2jTfW7e2yCt",
			"did:key:zQ3shsnWCW7HC7bYVnRcY5XxQpKArfafpB5S39DoqTkexuiTu"
		],
		"verificationMethods": {}
	}`
	const wantDID = syntax.DID("did:plc:ana7n2ppeqk57pay7azhjs24")

	var op identity.Operation
	if err := json.Unmarshal([]byte(opJSON), &op); err != nil {
		t.Fatal(err)
	}
	did, err := op.DID()
	if err != nil {
		t.Fatalf("DID: %v", err)
	}
	if did != wantDID {
		t.Fatalf("DID = %s, want %s", did, wantDID)
	}
	got, err := op.VerifyGenesis()
	if err != nil {
		t.Fatalf("VerifyGenesis: %v", err)
	}
	if got != wantDID {
		t.Fatalf("VerifyGenesis DID = %s, want %s", got, wantDID)
	}
}

func TestNewGenesisRotationKeys(t *testing.T) {
	k := newTestKeys(t)
	p256, err := atcrypto.GeneratePrivateKeyP256()
	if err != nil {
		t.Fatal(err)
	}
	p256Pub, err := p256.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	op, err := identity.NewGenesis(k.rotation, []atcrypto.PublicKey{p256Pub, k.signingPK}, k.signingPK, testHandle, testPDSURL)
	if err != nil {
		t.Fatalf("NewGenesis: %v", err)
	}
	want := []string{k.rotationPK.DIDKey(), p256Pub.DIDKey(), k.signingPK.DIDKey()}
	if strings.Join(op.RotationKeys, ",") != strings.Join(want, ",") {
		t.Fatalf("rotationKeys = %v, want %v", op.RotationKeys, want)
	}
	if _, err := op.VerifyGenesis(); err != nil {
		t.Fatalf("VerifyGenesis: %v", err)
	}
	if !strings.HasPrefix(op.RotationKeys[1], "did:key:zDnae") {
		t.Errorf("P-256 did:key %q lacks the zDnae prefix", op.RotationKeys[1])
	}
}

func TestNewGenesisErrors(t *testing.T) {
	k := newTestKeys(t)
	extra := func(n int) []atcrypto.PublicKey {
		var keys []atcrypto.PublicKey
		for range n {
			priv, err := atcrypto.GeneratePrivateKeyK256()
			if err != nil {
				t.Fatal(err)
			}
			pub, err := priv.PublicKey()
			if err != nil {
				t.Fatal(err)
			}
			keys = append(keys, pub)
		}
		return keys
	}
	tests := []struct {
		name     string
		rotation atcrypto.PrivateKey
		extra    []atcrypto.PublicKey
		signing  atcrypto.PublicKey
		handle   syntax.Handle
		pdsURL   string
	}{
		{name: "nil rotation key", signing: k.signingPK, handle: testHandle, pdsURL: testPDSURL},
		{name: "nil signing key", rotation: k.rotation, handle: testHandle, pdsURL: testPDSURL},
		{name: "empty handle", rotation: k.rotation, signing: k.signingPK, pdsURL: testPDSURL},
		{name: "invalid handle", rotation: k.rotation, signing: k.signingPK, handle: "not a handle", pdsURL: testPDSURL},
		{name: "empty pds url", rotation: k.rotation, signing: k.signingPK, handle: testHandle},
		{name: "relative pds url", rotation: k.rotation, signing: k.signingPK, handle: testHandle, pdsURL: "/xrpc"},
		{name: "non-http pds url", rotation: k.rotation, signing: k.signingPK, handle: testHandle, pdsURL: "ftp://pds.example.com"},
		{name: "nil extra rotation key", rotation: k.rotation, extra: []atcrypto.PublicKey{nil}, signing: k.signingPK, handle: testHandle, pdsURL: testPDSURL},
		{name: "duplicate rotation key", rotation: k.rotation, extra: []atcrypto.PublicKey{k.rotationPK}, signing: k.signingPK, handle: testHandle, pdsURL: testPDSURL},
		{name: "too many rotation keys", rotation: k.rotation, extra: extra(5), signing: k.signingPK, handle: testHandle, pdsURL: testPDSURL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			op, err := identity.NewGenesis(tt.rotation, tt.extra, tt.signing, tt.handle, tt.pdsURL)
			if err == nil {
				t.Fatalf("NewGenesis succeeded: %+v", op)
			}
			if !strings.HasPrefix(err.Error(), "build genesis op: ") {
				t.Errorf("error %q lacks context", err)
			}
		})
	}
	t.Run("max rotation keys", func(t *testing.T) {
		if _, err := identity.NewGenesis(k.rotation, extra(4), k.signingPK, testHandle, testPDSURL); err != nil {
			t.Fatalf("NewGenesis with 5 rotation keys: %v", err)
		}
	})
}

func TestOperationRejects(t *testing.T) {
	k := newTestKeys(t)
	prev := "bafyreiadih3ot3zecxp3yghygj2mwxh3szrrifwer2z4iodazbrtuvmmgm"
	tests := []struct {
		name   string
		mutate func(op *identity.Operation)
		// didErr: DID() must fail too (not just signature checks).
		didErr bool
	}{
		{name: "changed handle", mutate: func(op *identity.Operation) { op.AlsoKnownAs = []string{"at://mallory.example.com"} }},
		{name: "changed pds", mutate: func(op *identity.Operation) {
			op.Services["atproto_pds"] = identity.OpService{Type: "AtprotoPersonalDataServer", Endpoint: "https://evil.example.com"}
		}},
		{name: "added rotation key", mutate: func(op *identity.Operation) { op.RotationKeys = append(op.RotationKeys, k.signingPK.DIDKey()) }},
		{name: "padded sig", mutate: func(op *identity.Operation) { op.Sig += "==" }},
		{name: "std base64 sig", mutate: func(op *identity.Operation) {
			b, _ := base64.RawURLEncoding.DecodeString(op.Sig)
			op.Sig = base64.StdEncoding.EncodeToString(b)
		}},
		{name: "truncated sig", mutate: func(op *identity.Operation) { op.Sig = op.Sig[:40] }},
		{name: "unsigned", mutate: func(op *identity.Operation) { op.Sig = "" }, didErr: true},
		{name: "prev set", mutate: func(op *identity.Operation) { op.Prev = &prev }, didErr: true},
		{name: "wrong type", mutate: func(op *identity.Operation) { op.Type = "plc_tombstone" }, didErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			op := newTestGenesis(t, k)
			tt.mutate(op)
			if _, err := op.VerifyGenesis(); err == nil {
				t.Fatal("VerifyGenesis accepted a bad op")
			}
			if _, err := op.DID(); (err != nil) != tt.didErr {
				t.Fatalf("DID error = %v, want error: %v", err, tt.didErr)
			}
		})
	}
}

func TestVerifySignatureNilKey(t *testing.T) {
	op := newTestGenesis(t, newTestKeys(t))
	if err := op.VerifySignature(nil); err == nil {
		t.Fatal("VerifySignature(nil) succeeded")
	}
}

func TestSignResigns(t *testing.T) {
	k := newTestKeys(t)
	op := newTestGenesis(t, k)
	op.AlsoKnownAs = []string{"at://bob.example.com"}
	if err := op.VerifySignature(k.rotationPK); err == nil {
		t.Fatal("signature still verifies after edit")
	}
	if err := op.Sign(k.rotation); err != nil {
		t.Fatalf("Sign: %v", err)
	}
	if err := op.VerifySignature(k.rotationPK); err != nil {
		t.Fatalf("VerifySignature after re-sign: %v", err)
	}
}

func FuzzOperationJSON(f *testing.F) {
	k := newTestKeys(f)
	op := newTestGenesis(f, k)
	valid, err := json.Marshal(op)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid)
	f.Add([]byte(`{"type":"plc_operation","rotationKeys":["did:key:zQ3shhiASLv8GN7ob3iWqsAxP7nE95LUPWsNEb2jTfW7e2yCt"],"verificationMethods":{},"alsoKnownAs":[],"services":{},"prev":null,"sig":"AAAA"}`))
	f.Add([]byte(`{"type":"plc_operation","sig":"x","rotationKeys":null,"services":{"a":{}}}`))
	f.Add([]byte(`{"type":"plc_operation","prev":"bafy","sig":"x"}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`[]`))
	f.Add([]byte("{\"type\":\"plc_operation\",\"sig\":\"\xff\",\"alsoKnownAs\":[\"\\ud800\"]}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var op identity.Operation
		if err := json.Unmarshal(data, &op); err != nil {
			return
		}
		did, err := op.DID()
		_, _ = op.VerifyGenesis()
		_ = op.VerifySignature(k.rotationPK)
		if err != nil {
			return
		}
		if _, err := op.Document(did); err != nil {
			_ = err // unparseable keys are an error, never a panic
		}
		// A derivable DID survives a JSON round-trip.
		b, err := json.Marshal(&op)
		if err != nil {
			t.Fatalf("marshal decoded op: %v", err)
		}
		var again identity.Operation
		if err := json.Unmarshal(b, &again); err != nil {
			t.Fatalf("unmarshal re-encoded op: %v", err)
		}
		did2, err := again.DID()
		if err != nil {
			t.Fatalf("DID after round-trip: %v", err)
		}
		if did2 != did {
			t.Fatalf("DID changed across round-trip: %s != %s", did, did2)
		}
	})
}
