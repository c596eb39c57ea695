// Package readafter merges an account's own newest records into AppView
// answers that do not reflect them yet ("read after write"). The AppView
// reports, in the atproto-repo-rev response header, the revision of the
// account's repository it has indexed; records committed after that
// revision are rendered here, from the local repository, in the shapes the
// app.bsky lexicons define, and merged into the answer:
//
//   - getTimeline and getAuthorFeed (own feed only) gain the new posts, in
//     time order;
//   - getPostThread gains new replies under their parents;
//   - getProfile and getProfiles of the account show its new profile
//     record.
//
// Counts of a new post are zero, as they are right after posting. Embeds of
// images and external links are rendered; embedded records are left out
// (rendering them needs the AppView's view of the quoted record).
package readafter

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"

	"stratus/internal/repo"
)

// Methods whose answers are merged.
const (
	GetTimeline   = "app.bsky.feed.getTimeline"
	GetAuthorFeed = "app.bsky.feed.getAuthorFeed"
	GetPostThread = "app.bsky.feed.getPostThread"
	GetProfile    = "app.bsky.actor.getProfile"
	GetProfiles   = "app.bsky.actor.getProfiles"
)

// Handles reports whether nsid's answers are merged.
func Handles(nsid string) bool {
	switch nsid {
	case GetTimeline, GetAuthorFeed, GetPostThread, GetProfile, GetProfiles:
		return true
	}
	return false
}

// MaxRecords is how many newer records are considered, as the reference
// implementation does: an AppView further behind than that is not patched
// up record by record.
const MaxRecords = 10

// StoredRecord is a record read back with the revision of its commit.
type StoredRecord struct {
	Collection string
	RKey       string
	CID        cid.Cid
	Rev        string
	Data       []byte
}

// Store finds the records written after a revision.
type Store interface {
	RecordsSince(ctx context.Context, did syntax.DID, rev string, limit int) ([]StoredRecord, error)
}

// Record is a decoded local record.
type Record struct {
	URI       string
	CID       string
	IndexedAt string
	Value     map[string]any
}

// Local are the account's records newer than the AppView's revision.
type Local struct {
	Profile *Record
	Posts   []Record // oldest first
}

// Empty reports whether there is nothing to merge.
func (l Local) Empty() bool { return l.Profile == nil && len(l.Posts) == 0 }

// Since reads and decodes the records of did newer than rev.
func Since(ctx context.Context, st Store, did syntax.DID, rev string) (Local, error) {
	var out Local
	recs, err := st.RecordsSince(ctx, did, rev, MaxRecords)
	if err != nil {
		return out, err
	}
	for _, r := range recs {
		val, err := repo.DecodeRecord(r.Data)
		if err != nil {
			return out, fmt.Errorf("decode %s/%s: %w", r.Collection, r.RKey, err)
		}
		rec := Record{
			URI:       fmt.Sprintf("at://%s/%s/%s", did, r.Collection, r.RKey),
			CID:       r.CID.String(),
			IndexedAt: revTime(r.Rev),
			Value:     val,
		}
		switch {
		case r.Collection == "app.bsky.actor.profile" && r.RKey == "self":
			out.Profile = &rec
		case r.Collection == "app.bsky.feed.post":
			out.Posts = append(out.Posts, rec)
		}
	}
	return out, nil
}

// revTime is the commit time a revision (a TID) encodes, as an atproto
// datetime: the moment the record was indexed here.
func revTime(rev string) string {
	t, err := syntax.ParseTID(rev)
	if err != nil {
		return "1970-01-01T00:00:00.000Z"
	}
	return t.Time().UTC().Format("2006-01-02T15:04:05.000Z")
}

// Viewer renders local records.
type Viewer struct {
	DID    syntax.DID
	Handle string
	// Profile is the account's current profile record, nil if none.
	Profile map[string]any
	// BlobURL returns the URL an image blob is shown from.
	BlobURL func(did syntax.DID, cid string) string
}

// Merge rewrites the JSON answer body of nsid with the local records and
// returns the new body. An answer that does not have the expected shape is
// returned unchanged.
func Merge(nsid string, body []byte, local Local, v Viewer) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var out map[string]any
	if err := dec.Decode(&out); err != nil {
		return nil, fmt.Errorf("decode upstream answer: %w", err)
	}
	if local.Profile != nil {
		v.Profile = local.Profile.Value
	}
	switch nsid {
	case GetTimeline:
		feed, ok := out["feed"].([]any)
		if !ok {
			return body, nil
		}
		out["feed"] = v.insertPosts(feed, local.Posts)
	case GetAuthorFeed:
		feed, ok := out["feed"].([]any)
		if !ok || !v.isOwnFeed(feed) {
			return body, nil
		}
		if local.Profile != nil {
			for _, item := range feed {
				post := obj(obj(item)["post"])
				if author := obj(post["author"]); author != nil && author["did"] == v.DID.String() {
					v.updateProfileBasic(author)
				}
			}
		}
		out["feed"] = v.insertPosts(feed, local.Posts)
	case GetPostThread:
		thread := obj(out["thread"])
		if thread == nil || thread["$type"] != "app.bsky.feed.defs#threadViewPost" {
			return body, nil
		}
		for _, p := range local.Posts {
			if v.inThread(thread, p) {
				v.insertReply(thread, p)
			}
		}
	case GetProfile:
		if local.Profile == nil || out["did"] != v.DID.String() {
			return body, nil
		}
		v.updateProfileDetailed(out)
	case GetProfiles:
		profiles, ok := out["profiles"].([]any)
		if !ok || local.Profile == nil {
			return body, nil
		}
		for _, p := range profiles {
			if prof := obj(p); prof != nil && prof["did"] == v.DID.String() {
				v.updateProfileDetailed(prof)
			}
		}
	default:
		return body, nil
	}
	return json.Marshal(out)
}

func obj(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

// isOwnFeed reports whether an author feed is the account's own: its
// first item is the account's post or repost.
func (v Viewer) isOwnFeed(feed []any) bool {
	if len(feed) == 0 {
		return false
	}
	first := obj(feed[0])
	if reason := obj(first["reason"]); reason != nil {
		return reason["$type"] == "app.bsky.feed.defs#reasonRepost" && obj(reason["by"])["did"] == v.DID.String()
	}
	return obj(obj(first["post"])["author"])["did"] == v.DID.String()
}

// insertPosts places the posts newer than the feed's last item into the
// feed by time, newest first.
func (v Viewer) insertPosts(feed []any, posts []Record) []any {
	last := "1970-01-01T00:00:00.000Z"
	if len(feed) > 0 {
		if t := str(obj(obj(feed[len(feed)-1])["post"])["indexedAt"]); t != "" {
			last = t
		}
	}
	for i := len(posts) - 1; i >= 0; i-- {
		p := posts[i]
		if p.IndexedAt <= last || v.present(feed, p.URI) {
			continue
		}
		item := map[string]any{"post": v.postView(p)}
		idx := len(feed)
		for j, fi := range feed {
			if str(obj(obj(fi)["post"])["indexedAt"]) < p.IndexedAt {
				idx = j
				break
			}
		}
		feed = append(feed[:idx], append([]any{item}, feed[idx:]...)...)
	}
	return feed
}

// present reports whether the feed already shows the post (the AppView
// may have indexed it after reporting its revision).
func (v Viewer) present(feed []any, uri string) bool {
	for _, fi := range feed {
		if str(obj(obj(fi)["post"])["uri"]) == uri && obj(fi)["reason"] == nil {
			return true
		}
	}
	return false
}

// author is the account's app.bsky.actor.defs#profileViewBasic.
func (v Viewer) author() map[string]any {
	a := map[string]any{"did": v.DID.String(), "handle": v.Handle}
	if v.Profile != nil {
		if dn := str(v.Profile["displayName"]); dn != "" {
			a["displayName"] = dn
		}
		if c := blobCID(v.Profile["avatar"]); c != "" {
			a["avatar"] = v.BlobURL(v.DID, c)
		}
	}
	return a
}

// postView renders a local post as app.bsky.feed.defs#postView.
func (v Viewer) postView(p Record) map[string]any {
	view := map[string]any{
		"$type":       "app.bsky.feed.defs#postView",
		"uri":         p.URI,
		"cid":         p.CID,
		"author":      v.author(),
		"record":      p.Value,
		"replyCount":  0,
		"repostCount": 0,
		"likeCount":   0,
		"quoteCount":  0,
		"indexedAt":   p.IndexedAt,
	}
	if e := v.embedView(obj(p.Value["embed"])); e != nil {
		view["embed"] = e
	}
	return view
}

// embedView renders the media embeds of a post; others are left out.
func (v Viewer) embedView(embed map[string]any) map[string]any {
	switch str(embed["$type"]) {
	case "app.bsky.embed.images":
		imgs, _ := embed["images"].([]any)
		views := make([]any, 0, len(imgs))
		for _, i := range imgs {
			img := obj(i)
			c := blobCID(img["image"])
			if c == "" {
				continue
			}
			iv := map[string]any{"thumb": v.BlobURL(v.DID, c), "fullsize": v.BlobURL(v.DID, c), "alt": str(img["alt"])}
			if ar := obj(img["aspectRatio"]); ar != nil {
				iv["aspectRatio"] = ar
			}
			views = append(views, iv)
		}
		return map[string]any{"$type": "app.bsky.embed.images#view", "images": views}
	case "app.bsky.embed.external":
		ext := obj(embed["external"])
		if ext == nil {
			return nil
		}
		ev := map[string]any{"uri": str(ext["uri"]), "title": str(ext["title"]), "description": str(ext["description"])}
		if c := blobCID(ext["thumb"]); c != "" {
			ev["thumb"] = v.BlobURL(v.DID, c)
		}
		return map[string]any{"$type": "app.bsky.embed.external#view", "external": ev}
	}
	return nil
}

// blobCID returns the CID of a blob reference in a decoded record.
func blobCID(b any) string {
	m := obj(b)
	if m == nil {
		return ""
	}
	switch ref := m["ref"].(type) {
	case fmt.Stringer:
		return ref.String()
	case map[string]any:
		return str(ref["$link"])
	}
	return ""
}

func (v Viewer) updateProfileBasic(view map[string]any) {
	delete(view, "displayName")
	delete(view, "avatar")
	if dn := str(v.Profile["displayName"]); dn != "" {
		view["displayName"] = dn
	}
	if c := blobCID(v.Profile["avatar"]); c != "" {
		view["avatar"] = v.BlobURL(v.DID, c)
	}
}

func (v Viewer) updateProfileDetailed(view map[string]any) {
	v.updateProfileBasic(view)
	delete(view, "description")
	delete(view, "banner")
	if d := str(v.Profile["description"]); d != "" {
		view["description"] = d
	}
	if c := blobCID(v.Profile["banner"]); c != "" {
		view["banner"] = v.BlobURL(v.DID, c)
	}
}

// replyRef returns a post's reply.root.uri and reply.parent.uri.
func replyRef(p Record) (root, parent string) {
	reply := obj(p.Value["reply"])
	return str(obj(reply["root"])["uri"]), str(obj(reply["parent"])["uri"])
}

// inThread reports whether a local post replies within the thread shown.
func (v Viewer) inThread(thread map[string]any, p Record) bool {
	root, _ := replyRef(p)
	if root == "" {
		return false
	}
	post := obj(thread["post"])
	if str(post["uri"]) == root {
		return true
	}
	return str(obj(obj(obj(post["record"])["reply"])["root"])["uri"]) == root
}

// insertReply adds p as the first reply of its parent, wherever the
// parent appears in the thread's replies.
func (v Viewer) insertReply(view map[string]any, p Record) {
	_, parent := replyRef(p)
	if str(obj(view["post"])["uri"]) == parent {
		replies, _ := view["replies"].([]any)
		for _, r := range replies {
			if str(obj(obj(r)["post"])["uri"]) == p.URI {
				return
			}
		}
		node := map[string]any{"$type": "app.bsky.feed.defs#threadViewPost", "post": v.postView(p)}
		view["replies"] = append([]any{node}, replies...)
		return
	}
	replies, _ := view["replies"].([]any)
	for _, r := range replies {
		if child := obj(r); child != nil && child["$type"] == "app.bsky.feed.defs#threadViewPost" {
			v.insertReply(child, p)
		}
	}
}

// IsJSON reports whether a content type is JSON.
func IsJSON(contentType string) bool {
	mt, _, _ := strings.Cut(strings.ToLower(contentType), ";")
	mt = strings.TrimSpace(mt)
	return mt == "application/json" || (strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json"))
}
