package server_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"reflect"
	"testing"

	"stratus/internal/pdstest"
)

// TestGetRecordJSONValue checks that getRecord answers, for records of
// every shape of the data model, the JSON value that was written (the
// value is transcoded from the stored CBOR, not re-encoded from a map).
func TestGetRecordJSONValue(t *testing.T) {
	s := pdstest.NewServer(t)
	tok := s.Login(t, s.Handle(), pdstest.Password).AccessJWT
	img := upload(t, s, tok, "image/png", pngBytes(t))
	link := img.Ref.Link
	records := []obj{
		pdstest.Post("plain"),
		pdstest.Post("héllo 👋 <b>&amp;</b> \"q\" \\ \n\t \u2028 日本語 e\u0301"),
		{"$type": "app.bsky.feed.post", "text": "img", "createdAt": "2026-01-01T00:00:00.000Z",
			"embed": obj{"$type": "app.bsky.embed.images", "images": []any{obj{"alt": "<alt>", "image": img.json(),
				"aspectRatio": obj{"width": 3, "height": 4}}}},
			"facets": []any{obj{"index": obj{"byteStart": 0, "byteEnd": 3},
				"features": []any{obj{"$type": "app.bsky.richtext.facet#link", "uri": "https://example.com/?a=1&b=2"}}}},
			"langs": []any{"en", "ja"}},
		{"$type": "com.example.thing", "bytes": obj{"$bytes": "AAEC/w"}, "empty": obj{"$bytes": ""},
			"link": obj{"$link": link}, "links": []any{obj{"$link": link}, []any{obj{"$link": link}}},
			"nested": []any{[]any{}, []any{[]any{1, -2}}, obj{}}, "null": nil, "t": true, "f": false,
			"big": 9007199254740991, "neg": -9007199254740991, "": "empty key", "ключ": "значение"},
	}
	for i, rec := range records {
		in := map[string]any{"repo": s.DID(), "collection": rec["$type"], "record": rec}
		if rec["$type"] == "com.example.thing" {
			in["validate"] = false
		}
		var w pdstest.WriteResult
		s.Call(t, http.MethodPost, "com.atproto.repo.createRecord", nil, in, tok, &w)
		status, body := s.Do(t, http.MethodGet, "com.atproto.repo.getRecord",
			url.Values{"repo": {s.DID()}, "collection": {rec["$type"].(string)}, "rkey": {w.RKey()}}, nil, "")
		if status != http.StatusOK {
			t.Fatalf("record %d: getRecord %d %s", i, status, body)
		}
		var got struct {
			URI   string `json:"uri"`
			CID   string `json:"cid"`
			Value any    `json:"value"`
		}
		d := json.NewDecoder(bytes.NewReader(body))
		d.UseNumber()
		if err := d.Decode(&got); err != nil {
			t.Fatalf("record %d: %v: %s", i, err, body)
		}
		if got.URI != w.URI || got.CID != w.CID {
			t.Fatalf("record %d: uri/cid %s %s, want %s %s", i, got.URI, got.CID, w.URI, w.CID)
		}
		want := roundTrip(t, rec)
		if !reflect.DeepEqual(got.Value, want) {
			t.Fatalf("record %d: value\n got  %s\n want %v", i, body, want)
		}
	}
}

// roundTrip is v as a JSON client parses it.
func roundTrip(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var out any
	if err := d.Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}
