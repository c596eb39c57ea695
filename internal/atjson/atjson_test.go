package atjson_test

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/bluesky-social/indigo/atproto/atdata"
	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"

	"stratus/internal/atjson"
	"stratus/internal/repo"
)

func testCID(t testing.TB, s string) atdata.CIDLink {
	t.Helper()
	h, err := multihash.Sum([]byte(s), multihash.SHA2_256, -1)
	if err != nil {
		t.Fatal(err)
	}
	return atdata.CIDLink(cid.NewCidV1(cid.DagCBOR, h))
}

// records are the shapes real clients write, and the corners of the data
// model: blobs, links, bytes (empty too), nested arrays, unicode and
// characters JSON escapes.
func records(t testing.TB) []map[string]any {
	link := testCID(t, "a")
	rawLink := atdata.CIDLink(cid.NewCidV1(cid.Raw, must(multihash.Sum([]byte("img"), multihash.SHA2_256, -1))))
	v0 := atdata.CIDLink(cid.NewCidV0(must(multihash.Sum([]byte("v0"), multihash.SHA2_256, -1))))
	return []map[string]any{
		{"$type": "app.bsky.feed.post", "text": "hello world", "createdAt": "2024-01-01T00:00:00.000Z"},
		{"$type": "app.bsky.feed.post", "text": "héllo 👋 <b>&amp;</b> \"q\" \\ \n\t\r\x01\x1f \u2028\u2029 \u00e9\u0301", "langs": []any{"en", "fr"},
			"createdAt": "2024-01-01T00:00:00.000Z",
			"facets": []any{map[string]any{"index": map[string]any{"byteStart": int64(0), "byteEnd": int64(5)},
				"features": []any{map[string]any{"$type": "app.bsky.richtext.facet#link", "uri": "https://example.com/?a=1&b=2"}}}},
			"reply": map[string]any{"root": map[string]any{"uri": "at://did:plc:abc/app.bsky.feed.post/1", "cid": link.String()},
				"parent": map[string]any{"uri": "at://did:plc:abc/app.bsky.feed.post/1", "cid": link.String()}}},
		{"$type": "app.bsky.actor.profile", "displayName": "Alice", "description": "",
			"avatar": atdata.Blob{Ref: rawLink, MimeType: "image/png", Size: 12345},
			"banner": atdata.Blob{Ref: rawLink, MimeType: "image/jpeg", Size: 0}},
		{"$type": "app.bsky.feed.post", "text": "imgs", "createdAt": "2024-01-01T00:00:00.000Z",
			"embed": map[string]any{"$type": "app.bsky.embed.images", "images": []any{
				map[string]any{"alt": "", "image": atdata.Blob{Ref: rawLink, MimeType: "image/png", Size: 1},
					"aspectRatio": map[string]any{"width": int64(1), "height": int64(2)}}}}},
		{"$type": "x.y.z", "link": link, "v0": v0, "links": []any{link, link, []any{link}},
			"bytes": atdata.Bytes{0, 1, 2, 0xff}, "empty": atdata.Bytes{}, "nested": []any{[]any{}, []any{[]any{int64(1)}}, map[string]any{}},
			"null": nil, "t": true, "f": false, "neg": int64(-1), "min": int64(math.MinInt64), "max": int64(math.MaxInt64),
			"zero": int64(0), "": "empty key", "ключ": "значение", "日本": "語"},
		{"legacy": atdata.Blob{Ref: rawLink, MimeType: "image/png", Size: -1}},
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// reference renders data the way the read path did before: decode into
// the data model, then encoding/json.
func reference(data []byte) ([]byte, error) {
	v, err := repo.DecodeRecord(data)
	if err != nil {
		return nil, err
	}
	return json.Marshal(v)
}

func equalJSON(t testing.TB, a, b []byte) {
	t.Helper()
	var x, y any
	for _, p := range []struct {
		in  []byte
		out *any
	}{{a, &x}, {b, &y}} {
		d := json.NewDecoder(bytes.NewReader(p.in))
		d.UseNumber()
		if err := d.Decode(p.out); err != nil {
			t.Fatalf("invalid JSON %q: %v", p.in, err)
		}
	}
	if !reflect.DeepEqual(x, y) {
		t.Fatalf("JSON differs:\n got  %s\n want %s", a, b)
	}
}

func TestAppendRecord(t *testing.T) {
	for i, rec := range records(t) {
		data, err := atdata.MarshalCBOR(rec)
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		want, err := reference(data)
		if err != nil {
			t.Fatalf("record %d: reference: %v", i, err)
		}
		got, err := atjson.AppendRecord([]byte("prefix"), data)
		if _, legacy := rec["legacy"]; legacy {
			if err == nil {
				t.Fatalf("record %d: legacy blob not left to the full decoder", i)
			}
			continue
		}
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		if !bytes.HasPrefix(got, []byte("prefix")) {
			t.Fatalf("record %d: dst not appended to", i)
		}
		equalJSON(t, got[len("prefix"):], want)
	}
}

// TestAppendRecordFallback lists inputs that must be left to the full
// decoder: it either renders them differently from a plain map walk or
// rejects them.
func TestAppendRecordFallback(t *testing.T) {
	cases := map[string][]byte{
		"empty":             {},
		"not a map":         {0x01},
		"array at top":      {0x80},
		"truncated":         {0xa1, 0x61},
		"trailing bytes":    {0xa0, 0x00},
		"indefinite map":    {0xbf, 0xff},
		"int key":           {0xa1, 0x01, 0x01},
		"unsorted keys":     {0xa2, 0x61, 'b', 0x01, 0x61, 'a', 0x01},
		"duplicate keys":    {0xa2, 0x61, 'a', 0x01, 0x61, 'a', 0x01},
		"float":             {0xa1, 0x61, 'a', 0xfb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0},
		"undefined":         {0xa1, 0x61, 'a', 0xf7},
		"huge uint":         {0xa1, 0x61, 'a', 0x1b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
		"huge negint":       {0xa1, 0x61, 'a', 0x3b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
		"other tag":         {0xa1, 0x61, 'a', 0xc1, 0x01},
		"bad utf8":          {0xa1, 0x61, 'a', 0x61, 0xff},
		"$link in cbor":     {0xa1, 0x65, '$', 'l', 'i', 'n', 'k', 0x61, 'x'},
		"$type not string":  {0xa1, 0x65, '$', 't', 'y', 'p', 'e', 0x01},
		"$type empty":       {0xa1, 0x65, '$', 't', 'y', 'p', 'e', 0x60},
		"blob at top level": append([]byte{0xa1, 0x65, '$', 't', 'y', 'p', 'e', 0x64}, "blob"...),
		"blob missing keys": append([]byte{0xa1, 0x61, 'b', 0xa1, 0x65, '$', 't', 'y', 'p', 'e', 0x64}, "blob"...),
		"deep":              append(append([]byte{0xa1, 0x61, 'a'}, bytes.Repeat([]byte{0x81}, 100)...), 0x01),
	}
	for name, data := range cases {
		t.Run(name, func(t *testing.T) {
			if out, err := atjson.AppendRecord(nil, data); err == nil {
				t.Fatalf("transcoded to %s", out)
			}
		})
	}
}

func TestAppendString(t *testing.T) {
	for _, s := range []string{"", "plain", "<>&\"\\/", "\x00\x07\b\f\n\r\t\x1f\x7f", "\u2028\u2029", "é👋日本語", strings.Repeat("x", 1000)} {
		want, _ := json.Marshal(s)
		if got := atjson.AppendString(nil, []byte(s)); !bytes.Equal(got, want) {
			equalJSON(t, got, want)
		}
	}
}

// FuzzRecordJSON checks that whatever the transcoder renders is the JSON
// value the decode-then-encode path renders, for arbitrary bytes and for
// valid records generated from the input.
//
//	go test -run '^$' -fuzz FuzzRecordJSON ./internal/atjson/
func FuzzRecordJSON(f *testing.F) {
	for _, rec := range records(f) {
		f.Add(must(atdata.MarshalCBOR(rec)))
	}
	f.Add([]byte{0xa1, 0x61, 'a', 0xd8, 0x2a, 0x42, 0x00, 0x01})
	f.Fuzz(func(t *testing.T, data []byte) {
		check(t, data, false)
		// The same input as the seed of a random valid record.
		seed := uint64(len(data))
		for _, b := range data {
			seed = seed*131 + uint64(b)
		}
		rec := randomRecord(t, rand.New(rand.NewPCG(seed, 9)))
		enc, err := atdata.MarshalCBOR(rec)
		if err != nil {
			t.Skip()
		}
		check(t, enc, true)
	})
}

func check(t *testing.T, data []byte, mustTranscode bool) {
	t.Helper()
	got, err := atjson.AppendRecord(nil, data)
	if err != nil {
		if mustTranscode {
			if _, refErr := reference(data); refErr == nil {
				t.Fatalf("valid record %x left to the full decoder", data)
			}
		}
		return
	}
	want, refErr := reference(data)
	if refErr != nil {
		t.Fatalf("transcoded %x to %s, but the decoder rejects it: %v", data, got, refErr)
	}
	equalJSON(t, got, want)
}

// randomRecord builds a record of the data model, avoiding only the shapes
// the transcoder deliberately leaves to the full decoder (legacy blobs).
func randomRecord(t testing.TB, r *rand.Rand) map[string]any {
	rec := randomMap(t, r, 0)
	rec["$type"] = "app.example.record"
	return rec
}

func randomMap(t testing.TB, r *rand.Rand, depth int) map[string]any {
	m := map[string]any{}
	for range r.IntN(6) {
		m[randomString(r, 8)] = randomValue(t, r, depth+1)
	}
	delete(m, "$link")
	delete(m, "$bytes")
	delete(m, "$type")
	if len(m) == 2 {
		if _, ok := m["cid"]; ok {
			m["extra"] = true
		}
	}
	return m
}

func randomString(r *rand.Rand, n int) string {
	alphabet := []string{"a", "b", "z", "$", "é", "👋", "日", "<", "&", "\"", "\\", "\n", "\x00", "\u2028", " ", "cid", "mimeType"}
	var sb strings.Builder
	for range r.IntN(n) {
		sb.WriteString(alphabet[r.IntN(len(alphabet))])
	}
	return sb.String()
}

func randomValue(t testing.TB, r *rand.Rand, depth int) any {
	n := 11
	if depth > 4 {
		n = 7
	}
	switch r.IntN(n) {
	case 0:
		return nil
	case 1:
		return r.IntN(2) == 0
	case 2:
		return r.Int64() - r.Int64()
	case 3:
		return int64(r.IntN(1000)) - 500
	case 4:
		return randomString(r, 20)
	case 5:
		b := make([]byte, r.IntN(10))
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return atdata.Bytes(b)
	case 6:
		return testCID(t, randomString(r, 5))
	case 7:
		return atdata.Blob{Ref: testCID(t, randomString(r, 5)), MimeType: randomString(r, 6), Size: r.Int64N(1 << 40)}
	case 8, 9:
		a := make([]any, r.IntN(4))
		for i := range a {
			a[i] = randomValue(t, r, depth+1)
		}
		return a
	default:
		m := randomMap(t, r, depth)
		if r.IntN(2) == 0 {
			m["$type"] = "app.example.obj"
		}
		return m
	}
}

// trickyStrings need every kind of escape encoding/json writes.
var trickyStrings = []string{
	"",
	"plain text",
	`quote " backslash \ slash /`,
	"\b\f\n\r\t",
	"\x00\x01\x1f\x7f",
	"<script>&amp;</script>",
	"line\u2028separator\u2029paragraph",
	"naïve café 日本語 🦋",
	"invalid \xff utf-8 \xc3 end",
	"truncated \xe2\x80",
	"surrogate half \xed\xa0\x80",
	"\u2027\u202a",
	strings.Repeat("a<", 100),
}

func TestAppendString_LikeEncodingJSON(t *testing.T) {
	for _, s := range trickyStrings {
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := atjson.AppendString([]byte("x"), s); string(got) != "x"+string(want) {
			t.Errorf("AppendString(%q) = %s, encoding/json writes %s", s, got[1:], want)
		}
	}
}

func FuzzAppendString(f *testing.F) {
	for _, s := range trickyStrings {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := atjson.AppendString(nil, s); string(got) != string(want) {
			t.Errorf("AppendString(%q) = %s, encoding/json writes %s", s, got, want)
		}
		if got := atjson.AppendString(nil, []byte(s)); string(got) != string(want) {
			t.Errorf("AppendString([]byte(%q)) = %s, encoding/json writes %s", s, got, want)
		}
	})
}
