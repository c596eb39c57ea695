package schema

import (
	"testing"

	"github.com/bluesky-social/indigo/atproto/atdata"
)

// FuzzValidateRecord feeds arbitrary JSON through the same decode+validate
// path a createRecord request takes. The only property checked is that
// nothing panics: ValidateRecord runs on untrusted input inside request
// handlers, so a panic there would be a remote crash.
func FuzzValidateRecord(f *testing.F) {
	seeds := []string{
		`{"$type":"app.bsky.feed.post","text":"hello","createdAt":"2024-01-02T03:04:05.678Z"}`,
		`{"text":"","createdAt":"2024-01-02T03:04:05Z","langs":["en","pt-BR"]}`,
		`{"$type":"app.bsky.feed.post","text":"x","createdAt":"2024-01-02T03:04:05Z","embed":{"$type":"app.bsky.embed.images","images":[{"alt":"","image":{"$type":"blob","ref":{"$link":"` + testCID + `"},"mimeType":"image/png","size":10}}]}}`,
		`{"text":"hi @a","createdAt":"2024-01-02T03:04:05Z","facets":[{"index":{"byteStart":3,"byteEnd":5},"features":[{"$type":"app.bsky.richtext.facet#mention","did":"` + testDID + `"}]}]}`,
		`{"text":"r","createdAt":"2024-01-02T03:04:05Z","reply":{"root":{"uri":"at://` + testDID + `/app.bsky.feed.post/` + testTID + `","cid":"` + testCID + `"},"parent":{"uri":"at://` + testDID + `/app.bsky.feed.post/` + testTID + `","cid":"` + testCID + `"}}}`,
		`{"text":"q","createdAt":"2024-01-02T03:04:05Z","embed":{"$type":"app.bsky.embed.recordWithMedia","record":{"record":{"uri":"at://` + testDID + `/app.bsky.feed.post/` + testTID + `","cid":"` + testCID + `"}},"media":{"$type":"app.bsky.embed.external","external":{"uri":"https://example.com","title":"t","description":"d"}}}}`,
		`{"text":"l","createdAt":"2024-01-02T03:04:05Z","labels":{"$type":"com.atproto.label.defs#selfLabels","values":[{"val":"nudity"}]},"tags":["a"]}`,
		`{"text":"legacy","createdAt":"2024-01-02T03:04:05Z","embed":{"$type":"app.bsky.embed.images","images":[{"alt":"","image":{"cid":"` + testCID + `","mimeType":"image/png"}}]}}`,
		`{"text":"b","createdAt":"2024-01-02T03:04:05Z","x":{"$bytes":"aGVsbG8"}}`,
		`{"$type":"app.bsky.feed.like"}`,
		`{}`,
		`[]`,
		`null`,
		`{"text":1.5}`,
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	c := testCatalog(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		rec, err := atdata.UnmarshalJSON(data)
		if err != nil {
			return
		}
		_ = c.ValidateRecord("app.bsky.feed.post", rec)
	})
}
