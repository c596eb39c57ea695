package bench

import (
	"bytes"
	"encoding/json"
	"testing"
)

// answerSamples are createRecord and getRecord answers, usual and odd,
// and things that are not JSON.
var answerSamples = []string{
	`{"uri":"at://did:plc:abc/app.bsky.feed.post/3lzkq2b5xyz2a","cid":"bafyreihx5ytjyd7iqcxkntwrgsakrmhbgnebnvxzoqbjmbpsnzl7nq5kpu","value":{"$type":"app.bsky.feed.post","createdAt":"2026-01-02T03:04:05.678Z","text":"pds bench create-seq 7"}}`,
	`{"uri":"at://did:plc:abc/app.bsky.feed.post/3lzkq2b5xyz2a","cid":"bafyreihx5ytjyd7iqcxkntwrgsakrmhbgnebnvxzoqbjmbpsnzl7nq5kpu","commit":{"cid":"bafyreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy","rev":"3lzkq2b5xyz2a"},"validationStatus":"valid"}`,
	" {\n\t\"cid\" : \"c\" , \"uri\":\"u\" } \r\n",
	`{}`,
	`{"uri":"u"}`,
	`{"uri":"a","uri":"b","cid":"c","cid":"d"}`,
	`{"URI":"u","cid":"c"}`,
	`{"uri":"u","Cid":"c"}`,
	`{"uri":"u","cid":null}`,
	`{"uri":1,"cid":"c"}`,
	`{"uri":"\u0041","cid":"c"}`,
	`{"\u0075ri":"u","cid":"c"}`,
	`{"uri":"bad \xff utf-8","cid":"c"}`,
	`{"uri":"u","cid":"c","x":"bad \xff utf-8 elsewhere"}`,
	`{"uri":"u","cid":"c","n":[-0.5e+10,0,1E3,-12.25,true,false,null,{},[],{"a":[{"b":null}]}]}`,
	`{"uri":"u","cid":"c","n":01}`,
	`{"uri":"u","cid":"c","n":1.}`,
	`{"uri":"u","cid":"c","n":-}`,
	`{"uri":"u","cid":"c","n":1e}`,
	`{"uri":"u","cid":"c","n":.5}`,
	`{"uri":"u","cid":"c","t":tru}`,
	`{"uri":"u","cid":"c",}`,
	`{"uri":"u" "cid":"c"}`,
	`{"uri":"u","cid":"c"}x`,
	`{"uri":"u","cid":"c"`,
	`{"uri":"u","cid":"control` + "\x01" + `"}`,
	`{"uri":"u","cid":"c","deep":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}`,
	`[]`,
	`null`,
	`"uri"`,
	``,
	`{"uri":"u","cid":"c"}{}`,
	`{"uri":"u","value":null}`,
	`{"uri":"u","value":"s"}`,
	`{"uri":"u","value": [1, {"a" : "b"}] ,"value":{"x":1}}`,
	`{"uri":"u","Value":{}}`,
	`{"uri":"u","value":{"text":"esc\"aped"}}`,
	`{"uri":"u","value":{"text":"bad \u12"}}`,
}

// TestScanUsualAnswers makes sure the usual answers are decoded by the
// scan, not handed to json.Unmarshal.
func TestScanUsualAnswers(t *testing.T) {
	for _, a := range answerSamples[:6] {
		if !scanObject([]byte(a), []member{{name: "uri"}, {name: "value", raw: true}}) {
			t.Errorf("scan gives up on %s", a)
		}
	}
}

func TestDecodeAnswers(t *testing.T) {
	for _, a := range answerSamples {
		checkDecodeAnswers(t, []byte(a))
	}
}

func FuzzDecodeAnswers(f *testing.F) {
	for _, a := range answerSamples {
		f.Add([]byte(a))
	}
	f.Fuzz(checkDecodeAnswers)
}

// checkDecodeAnswers compares the decoders with json.Unmarshal, and the
// scan's verdict with json.Valid.
func checkDecodeAnswers(t *testing.T, b []byte) {
	var got, want writeAnswer
	gerr := decodeWriteAnswer(b, &got)
	werr := json.Unmarshal(b, &want)
	if got != want || (gerr == nil) != (werr == nil) {
		t.Errorf("%q: decoded %+v, %v; json.Unmarshal: %+v, %v", b, got, gerr, want, werr)
	}
	var gotRec, wantRec recordAnswer
	gerr = decodeRecordAnswer(b, &gotRec)
	werr = json.Unmarshal(b, &wantRec)
	if gotRec.URI != wantRec.URI || !bytes.Equal(gotRec.Value, wantRec.Value) || (gotRec.Value == nil) != (wantRec.Value == nil) || (gerr == nil) != (werr == nil) {
		t.Errorf("%q: decoded %q %q, %v; json.Unmarshal: %q %q, %v", b, gotRec.URI, gotRec.Value, gerr, wantRec.URI, wantRec.Value, werr)
	}
	if scanObject(b, []member{{name: "uri"}, {name: "cid"}, {name: "value", raw: true}}) && !json.Valid(b) {
		t.Errorf("%q: the scan accepts what is not JSON", b)
	}
}

func BenchmarkDecodeAnswers(b *testing.B) {
	create, record := []byte(answerSamples[1]), []byte(answerSamples[0])
	b.Run("createRecord/scan", func(b *testing.B) {
		for b.Loop() {
			var out writeAnswer
			decodeWriteAnswer(create, &out)
		}
	})
	b.Run("createRecord/encoding-json", func(b *testing.B) {
		for b.Loop() {
			var out writeAnswer
			json.Unmarshal(create, &out)
		}
	})
	b.Run("getRecord/scan", func(b *testing.B) {
		for b.Loop() {
			var out recordAnswer
			decodeRecordAnswer(record, &out)
		}
	})
	b.Run("getRecord/encoding-json", func(b *testing.B) {
		for b.Loop() {
			var out recordAnswer
			json.Unmarshal(record, &out)
		}
	})
}
