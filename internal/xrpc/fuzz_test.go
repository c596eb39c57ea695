package xrpc

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/bluesky-social/indigo/atproto/atdata"
	"github.com/bluesky-social/indigo/atproto/syntax"

	"stratus/internal/repo"
)

// FuzzParseRecord feeds arbitrary JSON through the record decoding of the
// write endpoints. Whatever is accepted must encode to DAG-CBOR and decode
// back to the same value; nothing may panic.
func FuzzParseRecord(f *testing.F) {
	for _, seed := range []string{
		`{"$type":"app.bsky.feed.post","text":"hi","createdAt":"2024-01-01T00:00:00Z"}`,
		`{"a":{"$link":"bafyreicildc2cezrdfdqdzucuwx5lmz7gjb4ilkndfvma2pcuk6sz2636q"}}`,
		`{"b":{"$bytes":"aGVsbG8"}}`,
		`{"img":{"$type":"blob","ref":{"$link":"bafkreibme22gw2h7y2h7tg2fhqotaqjucnbc24deqo72b6mkl2egezxhvy"},"mimeType":"image/png","size":10}}`,
		`{"x":1.5}`, `[]`, `null`, `{"deep":[[[[[[[[[[]]]]]]]]]]}`, `{"":""}`,
		`{"legacy":{"cid":"bafyreicildc2cezrdfdqdzucuwx5lmz7gjb4ilkndfvma2pcuk6sz2636q","mimeType":"image/png"}}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		rec, err := parseRecord("record", json.RawMessage(raw))
		if err != nil {
			return
		}
		cbor, err := atdata.MarshalCBOR(rec)
		if err != nil {
			return // rejected at encoding time, reported as InvalidRecord
		}
		back, err := repo.DecodeRecord(cbor)
		if err != nil {
			t.Fatalf("accepted record does not decode from its own CBOR: %v", err)
		}
		again, err := atdata.MarshalCBOR(back)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		if !bytes.Equal(cbor, again) {
			t.Fatalf("DAG-CBOR encoding is not stable: %x != %x", cbor, again)
		}
		if _, err := json.Marshal(back); err != nil {
			t.Fatalf("stored record cannot be served as JSON: %v", err)
		}
	})
}

// FuzzIdentifiers checks that the identifier parsing used for query and body
// parameters never panics and that accepted values round-trip as strings.
func FuzzIdentifiers(f *testing.F) {
	for _, s := range []string{"self", "3jzfcijpj2z2a", "..", "a/b", "app.bsky.feed.post", "at://did:plc:abc/app.bsky.feed.post/3jzf", "did:web:localhost%3A2583", "Alice.Test", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if k, err := syntax.ParseRecordKey(s); err == nil {
			if k.String() != s || s == "." || s == ".." {
				t.Fatalf("record key %q accepted as %q", s, k)
			}
		}
		if n, err := syntax.ParseNSID(s); err == nil && n.String() != s {
			t.Fatalf("nsid %q accepted as %q", s, n)
		}
		if u, err := syntax.ParseATURI(s); err == nil {
			_ = u.Authority()
			_ = u.Collection()
			_ = u.RecordKey()
		}
		if id, err := syntax.ParseAtIdentifier(s); err == nil {
			_ = id.String()
		}
		rk := s
		if _, err := parseRKey("rkey", &rk, true); err == nil {
			if _, perr := syntax.ParseRecordKey(s); perr != nil {
				t.Fatalf("parseRKey accepted %q that syntax rejects", s)
			}
		}
		if _, err := parseNSID("collection", s); err == nil {
			if _, perr := syntax.ParseNSID(s); perr != nil {
				t.Fatalf("parseNSID accepted %q that syntax rejects", s)
			}
		}
	})
}
