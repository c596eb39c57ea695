package scope

import (
	"errors"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want error
	}{
		{"atproto", nil},
		{"atproto transition:generic", nil},
		{"atproto transition:generic transition:chat.bsky transition:email", nil},
		{"atproto repo:app.bsky.feed.post?action=create", nil},
		{"atproto repo:* blob:image/* rpc:app.bsky.feed.getTimeline?aud=did:web:api.bsky.app%23bsky_appview", nil},
		{"atproto account:email identity:handle", nil},
		{"atproto  atproto", nil},
		{"", ErrNoAtproto},
		{"transition:generic", ErrNoAtproto},
		{"atproto openid", ErrOpenID},
		{"atproto transition:everything", ErrUnsupported},
		{"atproto include:com.example.auth", ErrInclude},
		{"atproto repo:not-an-nsid", ErrInvalid},
		{"atproto rpc:*?aud=*", ErrInvalid},
		{"atproto rpc:app.bsky.feed.getTimeline", ErrInvalid},
		{"atproto blob:image", ErrInvalid},
		{"atproto account:password", ErrInvalid},
		{"atproto frobnicate", ErrInvalid},
		{"atproto repo:app.bsky.feed.post?action=destroy", ErrInvalid},
		{"atproto " + strings.Repeat("x", MaxLength), ErrTooLong},
	} {
		_, err := Parse(tc.in)
		if !errors.Is(err, tc.want) && !(err == nil && tc.want == nil) {
			t.Errorf("Parse(%.60q) = %v, want %v", tc.in, err, tc.want)
		}
	}
}

func TestAllows(t *testing.T) {
	const appview = "did:web:api.bsky.app#bsky_appview"
	for _, tc := range []struct {
		scope string
		check func(*Set) bool
		want  bool
	}{
		{"atproto", func(s *Set) bool { return s.AllowsRepo("app.bsky.feed.post", Create) }, false},
		{"atproto transition:generic", func(s *Set) bool { return s.AllowsRepo("app.bsky.feed.post", Delete) }, true},
		{"atproto repo:app.bsky.feed.post", func(s *Set) bool { return s.AllowsRepo("app.bsky.feed.post", Update) }, true},
		{"atproto repo:app.bsky.feed.post?action=create", func(s *Set) bool { return s.AllowsRepo("app.bsky.feed.post", Create) }, true},
		{"atproto repo:app.bsky.feed.post?action=create", func(s *Set) bool { return s.AllowsRepo("app.bsky.feed.post", Delete) }, false},
		{"atproto repo:app.bsky.feed.post", func(s *Set) bool { return s.AllowsRepo("app.bsky.feed.like", Create) }, false},
		{"atproto repo:*?action=delete", func(s *Set) bool { return s.AllowsRepo("app.bsky.feed.like", Delete) }, true},
		{"atproto repo?collection=a.b.c&collection=a.b.d", func(s *Set) bool { return s.AllowsRepo("a.b.d", Create) }, true},
		{"atproto transition:generic", func(s *Set) bool { return s.AllowsBlob("video/mp4") }, true},
		{"atproto blob:image/*", func(s *Set) bool { return s.AllowsBlob("image/PNG") }, true},
		{"atproto blob:image/*", func(s *Set) bool { return s.AllowsBlob("video/mp4") }, false},
		{"atproto blob:image/png", func(s *Set) bool { return s.AllowsBlob("image/png; charset=x") }, true},
		{"atproto blob:image/png", func(s *Set) bool { return s.AllowsBlob("not a mime") }, false},
		{"atproto blob:*/*", func(s *Set) bool { return s.AllowsBlob("application/octet-stream") }, true},
		{"atproto transition:generic", func(s *Set) bool { return s.AllowsRPC("app.bsky.feed.getTimeline", appview) }, true},
		{"atproto transition:generic", func(s *Set) bool { return s.AllowsRPC("chat.bsky.convo.listConvos", appview) }, false},
		{"atproto transition:generic", func(s *Set) bool { return s.AllowsRPC("CHAT.bsky.convo.listConvos", appview) }, false},
		{"atproto transition:generic transition:chat.bsky", func(s *Set) bool { return s.AllowsRPC("chat.bsky.convo.listConvos", appview) }, true},
		{"atproto transition:chat.bsky", func(s *Set) bool { return s.AllowsRPC("chat.bsky.convo.listConvos", appview) }, false},
		{"atproto rpc:app.bsky.feed.getTimeline?aud=did:web:api.bsky.app%23bsky_appview", func(s *Set) bool { return s.AllowsRPC("app.bsky.feed.getTimeline", appview) }, true},
		{"atproto rpc:app.bsky.feed.getTimeline?aud=did:web:api.bsky.app%23bsky_appview", func(s *Set) bool {
			return s.AllowsRPC("app.bsky.feed.getTimeline", "did:web:evil.example#bsky_appview")
		}, false},
		{"atproto rpc:app.bsky.feed.getTimeline?aud=*", func(s *Set) bool { return s.AllowsRPC("app.bsky.feed.getTimeline", "did:web:evil.example#x") }, true},
		{"atproto rpc:*?aud=did:web:api.bsky.app%23bsky_appview", func(s *Set) bool { return s.AllowsRPC("app.bsky.actor.getProfile", appview) }, true},
		{"atproto rpc:app.bsky.feed.getTimeline?aud=*", func(s *Set) bool { return s.AllowsRPC("app.bsky.feed.getFeed", appview) }, false},
		{"atproto transition:email", func(s *Set) bool { return s.AllowsAccount("email", "read") }, true},
		{"atproto transition:generic", func(s *Set) bool { return s.AllowsAccount("email", "read") }, false},
		{"atproto account:email", func(s *Set) bool { return s.AllowsAccount("email", "manage") }, false},
		{"atproto account:email?action=manage", func(s *Set) bool { return s.AllowsAccount("email", "read") }, true},
		{"atproto account:repo?action=manage", func(s *Set) bool { return s.AllowsAccount("repo", "manage") }, true},
		{"atproto transition:generic", func(s *Set) bool { return s.AllowsIdentity("handle") }, false},
		{"atproto identity:handle", func(s *Set) bool { return s.AllowsIdentity("handle") }, true},
		{"atproto identity:handle", func(s *Set) bool { return s.AllowsIdentity("*") }, false},
		{"atproto identity:*", func(s *Set) bool { return s.AllowsIdentity("handle") }, true},
	} {
		if got := tc.check(MustParse(tc.scope)); got != tc.want {
			t.Errorf("%q: got %v, want %v", tc.scope, got, tc.want)
		}
	}
}

func TestSubsetAndDescribe(t *testing.T) {
	declared := MustParse("atproto transition:generic repo:app.bsky.feed.post")
	if bad, ok := MustParse("atproto repo:app.bsky.feed.post").SubsetOf(declared); !ok {
		t.Errorf("subset refused %q", bad)
	}
	if bad, ok := MustParse("atproto transition:email").SubsetOf(declared); ok || bad != TransitionEmail {
		t.Errorf("SubsetOf = %q, %v", bad, ok)
	}
	d := strings.Join(MustParse("atproto transition:generic repo:app.bsky.feed.post?action=delete&action=create blob:image/*").Describe(), "\n")
	for _, want := range []string{"Create and delete records of type app.bsky.feed.post", "Upload files of type image/*", "cannot change your handle"} {
		if !strings.Contains(d, want) {
			t.Errorf("description lacks %q:\n%s", want, d)
		}
	}
}

func FuzzParseScope(f *testing.F) {
	for _, s := range []string{"atproto", "atproto transition:generic", "atproto repo:a.b.c?action=create", "atproto rpc:*?aud=did:web:x%23y", "include:a.b.c", "atproto blob?accept=image/*&accept=video/*"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		set, err := Parse(s)
		if err != nil {
			return
		}
		// A parsed set re-parses to the same set.
		again, err := Parse(set.String())
		if err != nil || again.String() != set.String() {
			t.Fatalf("round trip of %q: %v %q", s, err, again)
		}
		set.AllowsRepo("a.b.c", Create)
		set.AllowsBlob("image/png")
		set.AllowsRPC("a.b.c", "did:web:x#y")
		set.Describe()
	})
}
