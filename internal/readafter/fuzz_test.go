package readafter

import (
	"testing"

	"github.com/bluesky-social/indigo/atproto/syntax"
)

// FuzzMerge feeds arbitrary AppView answers through every merge: they come
// from another service, so no shape of JSON may panic the server.
func FuzzMerge(f *testing.F) {
	f.Add(`{"feed":[{"post":{"uri":"at://x/app.bsky.feed.post/1","indexedAt":"2020-01-01T00:00:00.000Z","author":{"did":"did:plc:a"}}}]}`)
	f.Add(`{"thread":{"$type":"app.bsky.feed.defs#threadViewPost","post":{"uri":"at://did:plc:a/app.bsky.feed.post/1"},"replies":[1,{"$type":"app.bsky.feed.defs#threadViewPost"}]}}`)
	f.Add(`{"did":"did:plc:a","profiles":[null,{"did":"did:plc:a"}],"feed":"x"}`)
	local := Local{
		Profile: &Record{URI: "at://did:plc:a/app.bsky.actor.profile/self", Value: map[string]any{"displayName": "A", "avatar": map[string]any{"ref": map[string]any{"$link": "bafy"}}}},
		Posts: []Record{{URI: "at://did:plc:a/app.bsky.feed.post/2", CID: "bafy", IndexedAt: "2030-01-01T00:00:00.000Z", Value: map[string]any{
			"text": "t", "reply": map[string]any{"root": map[string]any{"uri": "at://did:plc:a/app.bsky.feed.post/1"}, "parent": map[string]any{"uri": "at://did:plc:a/app.bsky.feed.post/1"}},
			"embed": map[string]any{"$type": "app.bsky.embed.images", "images": []any{map[string]any{"image": map[string]any{"ref": map[string]any{"$link": "bafy"}}}, 3}}}}},
	}
	v := Viewer{DID: syntax.DID("did:plc:a"), Handle: "a.test", BlobURL: func(syntax.DID, string) string { return "https://x" }}
	f.Fuzz(func(t *testing.T, body string) {
		for _, nsid := range []string{GetTimeline, GetAuthorFeed, GetPostThread, GetProfile, GetProfiles} {
			_, _ = Merge(nsid, []byte(body), local, v)
		}
	})
}
