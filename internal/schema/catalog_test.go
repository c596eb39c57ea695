package schema

import (
	"encoding/json"
	"errors"
	"io/fs"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/bluesky-social/indigo/atproto/atdata"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"
)

const (
	testTID      = "3jzfcijpj2z2a"
	testDID      = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
	testDatetime = "2024-01-02T03:04:05.678Z"
	// testCID is a CIDv1 (dag-cbor, sha2-256) in its usual base32 form.
	testCID = "bafyreidfayvfuwqa7qlnopdjiqrxzs6blmoeu4rujcjtnci5beludirz2a"
)

var (
	sharedOnce sync.Once
	sharedCat  *Catalog
	sharedErr  error
)

// testCatalog returns one Catalog for the whole test binary; loading is the
// slow part and the catalog is read-only, which is exactly how production
// code is meant to use it.
func testCatalog(tb testing.TB) *Catalog {
	tb.Helper()
	sharedOnce.Do(func() { sharedCat, sharedErr = Load() })
	if sharedErr != nil {
		tb.Fatalf("Load: %v", sharedErr)
	}
	return sharedCat
}

func testCIDLink(tb testing.TB) atdata.CIDLink {
	tb.Helper()
	c, err := cid.Decode(testCID)
	if err != nil {
		tb.Fatalf("decoding test CID: %v", err)
	}
	return atdata.CIDLink(c)
}

func validPost() map[string]any {
	return map[string]any{
		"$type":     "app.bsky.feed.post",
		"text":      "hello world",
		"createdAt": testDatetime,
	}
}

// with returns a copy of base with the given fields set; a nil value deletes
// the field. Copies keep table cases independent of each other.
func with(base map[string]any, kv ...any) map[string]any {
	out := maps.Clone(base)
	for i := 0; i < len(kv); i += 2 {
		k := kv[i].(string)
		if kv[i+1] == nil {
			delete(out, k)
			continue
		}
		out[k] = kv[i+1]
	}
	return out
}

// jsonFiles lists every embedded .json file relative to the lexicon root.
func jsonFiles(t *testing.T) []string {
	t.Helper()
	var out []string
	err := fs.WalkDir(lexiconFS, lexiconRoot, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(p, ".json") {
			out = append(out, strings.TrimPrefix(p, lexiconRoot+"/"))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestLoadAllFiles(t *testing.T) {
	c := testCatalog(t)
	all := jsonFiles(t)
	var want []string
	for _, f := range all {
		if _, skip := excludedFiles[f]; !skip {
			want = append(want, f)
		}
	}
	if !slices.Equal(c.files, want) {
		missing := slices.DeleteFunc(slices.Clone(want), func(f string) bool { return slices.Contains(c.files, f) })
		t.Fatalf("loaded %d of %d expected files; missing: %v", len(c.files), len(want), missing)
	}
	// Each of the three copied trees must actually be present; an empty
	// subtree would otherwise go unnoticed after a botched refresh.
	for _, prefix := range []string{"com/atproto/", "app/bsky/", "chat/bsky/"} {
		t.Run(strings.TrimSuffix(prefix, "/"), func(t *testing.T) {
			if !slices.ContainsFunc(c.files, func(f string) bool { return strings.HasPrefix(f, prefix) }) {
				t.Errorf("no lexicons loaded under %s", prefix)
			}
		})
	}
}

// TestExcludedFiles pins the exclusion list: every excluded file must be
// named here with intent, and must still exist (otherwise the entry is stale).
func TestExcludedFiles(t *testing.T) {
	wantExcluded := []string{} // none: every copied lexicon loads in indigo's catalog
	got := slices.Sorted(maps.Keys(excludedFiles))
	if !slices.Equal(got, wantExcluded) {
		t.Fatalf("excludedFiles = %v, want %v", got, wantExcluded)
	}
	all := jsonFiles(t)
	for f, reason := range excludedFiles {
		t.Run(f, func(t *testing.T) {
			if reason == "" {
				t.Error("exclusion has no reason")
			}
			if !slices.Contains(all, f) {
				t.Error("excluded file is not in the embedded tree")
			}
		})
	}
}

func TestLoadFSErrors(t *testing.T) {
	good := []byte(`{"lexicon":1,"id":"com.example.thing","defs":{"main":{"type":"record","key":"tid","record":{"type":"object","properties":{}}}}}`)
	tests := []struct {
		name    string
		fsys    fstest.MapFS
		wantErr string
	}{
		{
			name: "ok",
			fsys: fstest.MapFS{"lex/com/example/thing.json": {Data: good}},
		},
		{
			name:    "bad json names the file",
			fsys:    fstest.MapFS{"lex/com/example/thing.json": {Data: []byte(`{"lexicon":`)}},
			wantErr: "com/example/thing.json",
		},
		{
			name:    "schema check failure names the file",
			fsys:    fstest.MapFS{"lex/com/example/thing.json": {Data: []byte(`{"lexicon":1,"id":"com.example.thing","defs":{"main":{"type":"record","key":"bogus","record":{"type":"object","properties":{}}}}}`)}},
			wantErr: "invalid record key specifier",
		},
		{
			name:    "id does not match path",
			fsys:    fstest.MapFS{"lex/com/example/other.json": {Data: good}},
			wantErr: "does not match its path",
		},
		{
			name:    "empty tree",
			fsys:    fstest.MapFS{"lex/README.md": {Data: []byte("hi")}},
			wantErr: "no lexicon files",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := loadFS(tt.fsys, "lex")
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if !c.HasRecord("com.example.thing") {
					t.Error("record from fixture not loaded")
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

// TestAllRefsResolve guards against dangling references. indigo resolves
// refs lazily during validation, so a ref to a lexicon outside the copied
// trees would only surface when some record happened to use that field.
func TestAllRefsResolve(t *testing.T) {
	c := testCatalog(t)
	for _, f := range c.files {
		b, err := fs.ReadFile(lexiconFS, lexiconRoot+"/"+f)
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			ID   string         `json:"id"`
			Defs map[string]any `json:"defs"`
		}
		if err := json.Unmarshal(b, &doc); err != nil {
			t.Fatal(err)
		}
		for _, ref := range collectRefs(doc.Defs, nil) {
			full := ref
			if strings.HasPrefix(ref, "#") {
				full = doc.ID + ref
			}
			if _, err := c.base.Resolve(full); err != nil {
				t.Errorf("%s: ref %q does not resolve: %v", f, ref, err)
			}
		}
	}
}

// collectRefs gathers the targets of every "ref" and "union" schema node.
func collectRefs(v any, acc []string) []string {
	switch x := v.(type) {
	case map[string]any:
		switch x["type"] {
		case "ref":
			if s, ok := x["ref"].(string); ok {
				acc = append(acc, s)
			}
		case "union":
			if refs, ok := x["refs"].([]any); ok {
				for _, r := range refs {
					if s, ok := r.(string); ok {
						acc = append(acc, s)
					}
				}
			}
		}
		for _, child := range x {
			acc = collectRefs(child, acc)
		}
	case []any:
		for _, child := range x {
			acc = collectRefs(child, acc)
		}
	}
	return acc
}

func TestHasRecord(t *testing.T) {
	c := testCatalog(t)
	tests := []struct {
		nsid syntax.NSID
		want bool
	}{
		{"app.bsky.feed.post", true},
		{"app.bsky.graph.follow", true},
		{"app.bsky.actor.profile", true},
		{"chat.bsky.actor.declaration", true},
		{"com.atproto.lexicon.schema", true},
		{"com.atproto.repo.createRecord", false}, // procedure
		{"app.bsky.feed.getTimeline", false},     // query
		{"app.bsky.feed.defs", false},            // defs only
		{"com.example.thing", false},             // unknown
		{"", false},
	}
	for _, tt := range tests {
		t.Run(string(tt.nsid), func(t *testing.T) {
			if got := c.HasRecord(tt.nsid); got != tt.want {
				t.Errorf("HasRecord(%q) = %v, want %v", tt.nsid, got, tt.want)
			}
		})
	}
}

func TestKeyRule(t *testing.T) {
	c := testCatalog(t)
	tests := []struct {
		nsid   syntax.NSID
		want   string
		wantOK bool
	}{
		{"app.bsky.feed.post", "tid", true},
		{"app.bsky.feed.like", "tid", true},
		{"app.bsky.actor.profile", "literal:self", true},
		{"chat.bsky.actor.declaration", "literal:self", true},
		{"app.bsky.feed.generator", "any", true},
		{"com.atproto.lexicon.schema", "nsid", true},
		{"com.atproto.repo.createRecord", "", false},
		{"com.example.thing", "", false},
	}
	for _, tt := range tests {
		t.Run(string(tt.nsid), func(t *testing.T) {
			got, ok := c.KeyRule(tt.nsid)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("KeyRule(%q) = %q, %v; want %q, %v", tt.nsid, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestCheckRecordKey(t *testing.T) {
	c := testCatalog(t)
	tests := []struct {
		name       string
		collection syntax.NSID
		rkey       syntax.RecordKey
		wantErr    string // exact message; "" means success
	}{
		{"profile self", "app.bsky.actor.profile", "self", ""},
		{"profile tid", "app.bsky.actor.profile", testTID, `Invalid record key for app.bsky.actor.profile: must be "self"`},
		{"profile other literal", "app.bsky.actor.profile", "Self", `Invalid record key for app.bsky.actor.profile: must be "self"`},
		{"chat declaration self", "chat.bsky.actor.declaration", "self", ""},
		{"like tid", "app.bsky.feed.like", testTID, ""},
		{"like self", "app.bsky.feed.like", "self", "Invalid record key for app.bsky.feed.like: must be a TID"},
		{"like tid-length non-tid", "app.bsky.feed.like", "zzzzzzzzzzzzz", "Invalid record key for app.bsky.feed.like: must be a TID"},
		{"post tid", "app.bsky.feed.post", testTID, ""},
		{"generator any", "app.bsky.feed.generator", "my-feed", ""},
		{"lexicon schema nsid", "com.atproto.lexicon.schema", "com.example.thing", ""},
		{"lexicon schema non-nsid", "com.atproto.lexicon.schema", "self", "Invalid record key for com.atproto.lexicon.schema: must be an NSID"},
		{"unknown collection any key", "com.example.thing", "whatever~1", ""},
		{"unknown collection bad syntax", "com.example.thing", "a/b", "Invalid record key for com.example.thing: not a valid record key"},
		{"dot-dot rejected everywhere", "app.bsky.feed.generator", "..", "Invalid record key for app.bsky.feed.generator: not a valid record key"},
		{"empty rejected", "app.bsky.actor.profile", "", "Invalid record key for app.bsky.actor.profile: not a valid record key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := c.CheckRecordKey(tt.collection, tt.rkey)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tt.wantErr != "" && err == nil:
				t.Fatalf("expected error %q, got nil", tt.wantErr)
			case tt.wantErr != "" && err.Error() != tt.wantErr:
				t.Fatalf("error = %q, want %q", err.Error(), tt.wantErr)
			}
		})
	}
}

func TestValidateRecord(t *testing.T) {
	c := testCatalog(t)
	link := testCIDLink(t)
	image := func(mime string, size int64) map[string]any {
		return map[string]any{
			"$type": "app.bsky.embed.images",
			"images": []any{map[string]any{
				"alt":   "a cat",
				"image": atdata.Blob{Ref: link, MimeType: mime, Size: size},
			}},
		}
	}
	tests := []struct {
		name       string
		collection syntax.NSID
		rec        map[string]any
		wantErr    []string // substrings the error must contain; nil means success
	}{
		{"post valid", "app.bsky.feed.post", validPost(), nil},
		{"post without $type", "app.bsky.feed.post", with(validPost(), "$type", nil), nil},
		{"post with langs", "app.bsky.feed.post", with(validPost(), "langs", []any{"en", "pt-BR"}), nil},
		{"post empty text", "app.bsky.feed.post", with(validPost(), "text", ""), nil},
		{"post missing createdAt", "app.bsky.feed.post", with(validPost(), "createdAt", nil),
			[]string{"Invalid app.bsky.feed.post record: ", "createdAt"}},
		{"post missing text", "app.bsky.feed.post", with(validPost(), "text", nil),
			[]string{"Invalid app.bsky.feed.post record: ", "text"}},
		{"post text is integer", "app.bsky.feed.post", with(validPost(), "text", int64(42)),
			[]string{"Invalid app.bsky.feed.post record: ", "expected a string"}},
		{"post createdAt is bool", "app.bsky.feed.post", with(validPost(), "createdAt", true),
			[]string{"Invalid app.bsky.feed.post record: ", "expected a string"}},
		{"post createdAt not a datetime", "app.bsky.feed.post", with(validPost(), "createdAt", "yesterday"),
			[]string{"Invalid app.bsky.feed.post record: "}},
		{"post createdAt without timezone", "app.bsky.feed.post", with(validPost(), "createdAt", "2024-01-02T03:04:05"),
			[]string{"Invalid app.bsky.feed.post record: "}},
		{"post langs not array", "app.bsky.feed.post", with(validPost(), "langs", "en"),
			[]string{"Invalid app.bsky.feed.post record: ", "expected an array"}},
		{"post text too long", "app.bsky.feed.post", with(validPost(), "text", strings.Repeat("a", 301)),
			[]string{"Invalid app.bsky.feed.post record: ", "graphemes"}},
		{"post reply wrong shape", "app.bsky.feed.post", with(validPost(), "reply", "at://x"),
			[]string{"Invalid app.bsky.feed.post record: ", "expected an object"}},
		{"post $type mismatch", "app.bsky.feed.post", with(validPost(), "$type", "app.bsky.feed.like"),
			[]string{"Invalid app.bsky.feed.post record: ", `$type must be "app.bsky.feed.post"`}},
		{"post $type not a string", "app.bsky.feed.post", with(validPost(), "$type", int64(1)),
			[]string{"Invalid app.bsky.feed.post record: ", "$type must be a string"}},
		{"post nil map", "app.bsky.feed.post", nil,
			[]string{"Invalid app.bsky.feed.post record: ", "required field missing"}},
		{"post image embed", "app.bsky.feed.post", with(validPost(), "embed", image("image/jpeg", 12345)), nil},
		{"post image embed wrong mime", "app.bsky.feed.post", with(validPost(), "embed", image("video/mp4", 12345)),
			[]string{"Invalid app.bsky.feed.post record: ", "mimetype"}},
		{"post image embed too large", "app.bsky.feed.post", with(validPost(), "embed", image("image/png", 50_000_000)),
			[]string{"Invalid app.bsky.feed.post record: ", "too large"}},
		{"post image embed legacy blob", "app.bsky.feed.post", with(validPost(), "embed", image("image/png", -1)),
			[]string{"Invalid app.bsky.feed.post record: ", "legacy"}},
		{"post embed of unlisted open-union type", "app.bsky.feed.post", with(validPost(), "embed", map[string]any{"$type": "com.example.embed", "x": int64(1)}), nil},
		{"post embed without $type", "app.bsky.feed.post", with(validPost(), "embed", map[string]any{"images": []any{}}),
			[]string{"Invalid app.bsky.feed.post record: ", "$type"}},
		{"like valid", "app.bsky.feed.like", map[string]any{
			"$type":     "app.bsky.feed.like",
			"subject":   map[string]any{"uri": "at://" + testDID + "/app.bsky.feed.post/" + testTID, "cid": testCID},
			"createdAt": testDatetime,
		}, nil},
		{"like subject missing cid", "app.bsky.feed.like", map[string]any{
			"subject":   map[string]any{"uri": "at://" + testDID + "/app.bsky.feed.post/" + testTID},
			"createdAt": testDatetime,
		}, []string{"Invalid app.bsky.feed.like record: ", "cid"}},
		{"follow valid", "app.bsky.graph.follow", map[string]any{"subject": testDID, "createdAt": testDatetime}, nil},
		{"follow subject not a did", "app.bsky.graph.follow", map[string]any{"subject": "alice.example.com", "createdAt": testDatetime},
			[]string{"Invalid app.bsky.graph.follow record: "}},
		{"profile valid", "app.bsky.actor.profile", map[string]any{"displayName": "Alice"}, nil},
		{"chat declaration valid", "chat.bsky.actor.declaration", map[string]any{"allowIncoming": "following"}, nil},
		{"chat declaration missing field", "chat.bsky.actor.declaration", map[string]any{},
			[]string{"Invalid chat.bsky.actor.declaration record: ", "allowIncoming"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Keys only: values may be slices, which are not comparable.
			before := slices.Sorted(maps.Keys(tt.rec))
			err := c.ValidateRecord(tt.collection, tt.rec)
			if after := slices.Sorted(maps.Keys(tt.rec)); !slices.Equal(before, after) {
				t.Errorf("ValidateRecord modified the caller's map keys: %v -> %v", before, after)
			}
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("expected an error containing %q, got nil", tt.wantErr)
			}
			if errors.Is(err, ErrUnknownSchema) {
				t.Errorf("validation error must not match ErrUnknownSchema: %v", err)
			}
			if !strings.HasPrefix(err.Error(), tt.wantErr[0]) {
				t.Errorf("error %q does not start with %q", err, tt.wantErr[0])
			}
			for _, sub := range tt.wantErr[1:] {
				if !strings.Contains(err.Error(), sub) {
					t.Errorf("error %q does not mention %q", err, sub)
				}
			}
		})
	}
}

func TestValidateRecordUnknownSchema(t *testing.T) {
	c := testCatalog(t)
	tests := []struct {
		name       string
		collection syntax.NSID
	}{
		{"unknown collection", "com.example.thing"},
		{"procedure is not a record", "com.atproto.repo.createRecord"},
		{"query is not a record", "app.bsky.feed.getTimeline"},
		{"defs is not a record", "app.bsky.feed.defs"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := c.ValidateRecord(tt.collection, map[string]any{"$type": tt.collection.String()})
			if !errors.Is(err, ErrUnknownSchema) {
				t.Fatalf("errors.Is(%v, ErrUnknownSchema) = false", err)
			}
			if want := "Unknown lexicon type: " + tt.collection.String(); err.Error() != want {
				t.Errorf("error = %q, want %q", err, want)
			}
		})
	}
}

// TestValidateRecordFromJSON exercises the path real requests take: client
// JSON decoded by atdata.UnmarshalJSON, including a blob whose ref arrives as
// {"$link": ...} and becomes an atdata.CIDLink.
func TestValidateRecordFromJSON(t *testing.T) {
	c := testCatalog(t)
	tests := []struct {
		name    string
		json    string
		wantErr string
	}{
		{"post", `{"$type":"app.bsky.feed.post","text":"hi","createdAt":"` + testDatetime + `"}`, ""},
		{"post with image", `{"$type":"app.bsky.feed.post","text":"","createdAt":"` + testDatetime + `",
			"embed":{"$type":"app.bsky.embed.images","images":[{"alt":"","image":{"$type":"blob","ref":{"$link":"` + testCID + `"},"mimeType":"image/webp","size":1000}}]}}`, ""},
		{"post with facet", `{"text":"hi @alice","createdAt":"` + testDatetime + `",
			"facets":[{"index":{"byteStart":3,"byteEnd":9},"features":[{"$type":"app.bsky.richtext.facet#mention","did":"` + testDID + `"}]}]}`, ""},
		{"facet with bad did", `{"text":"hi @alice","createdAt":"` + testDatetime + `",
			"facets":[{"index":{"byteStart":3,"byteEnd":9},"features":[{"$type":"app.bsky.richtext.facet#mention","did":"alice"}]}]}`, "Invalid app.bsky.feed.post record: "},
		{"float where integer expected", `{"text":"hi","createdAt":"` + testDatetime + `",
			"facets":[{"index":{"byteStart":"3","byteEnd":9},"features":[]}]}`, "expected an integer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec, err := atdata.UnmarshalJSON([]byte(tt.json))
			if err != nil {
				t.Fatalf("atdata.UnmarshalJSON: %v", err)
			}
			err = c.ValidateRecord("app.bsky.feed.post", rec)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

// TestConcurrentUse backs the "safe for concurrent use" promise; it is most
// useful under -race.
func TestConcurrentUse(t *testing.T) {
	c := testCatalog(t)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Go(func() {
			for range 50 {
				if err := c.ValidateRecord("app.bsky.feed.post", validPost()); err != nil {
					errs <- err
					return
				}
				if err := c.CheckRecordKey("app.bsky.feed.post", testTID); err != nil {
					errs <- err
					return
				}
				_ = c.HasRecord("app.bsky.feed.like")
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func BenchmarkValidatePost(b *testing.B) {
	c := testCatalog(b)
	rec := validPost()
	b.ReportAllocs()
	for b.Loop() {
		if err := c.ValidateRecord("app.bsky.feed.post", rec); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkLoad(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Load(); err != nil {
			b.Fatal(err)
		}
	}
}
