package bench

import (
	"encoding/json"
	"testing"
	"time"
)

// postAt is post with a given createdAt, for comparing bytes.
func postAt(scenario string, i int, at time.Time) map[string]any {
	p := post(scenario, i)
	p["createdAt"] = at.UTC().Format(createdAtLayout)
	return p
}

func TestCreatePostBody(t *testing.T) {
	at := time.Date(2026, 3, 4, 5, 6, 7, 891_234_567, time.FixedZone("", 3600))
	for _, repo := range []string{"did:plc:ewvi7nxzyoun6zhxrhs64oiz", "did:web:a<b>&c\u2028"} {
		for _, scenario := range []string{CreateSeq, "odd \"name\"\n"} {
			want, err := json.Marshal(map[string]any{"repo": repo, "collection": PostCollection, "record": postAt(scenario, 42, at)})
			if err != nil {
				t.Fatal(err)
			}
			if got := createPostBody(repo, scenario, 42, at); string(got) != string(want) {
				t.Errorf("createPostBody:\n got %s\nwant %s", got, want)
			}
		}
	}
}

func TestApplyWritesBody(t *testing.T) {
	at := time.Date(2026, 12, 31, 23, 59, 59, 999_999_999, time.UTC)
	for _, n := range []int{1, 3} {
		writes := make([]map[string]any, n)
		for i := range writes {
			writes[i] = map[string]any{
				"$type":      "com.atproto.repo.applyWrites#create",
				"collection": PostCollection,
				"value":      postAt(ApplyWrites, 200+i, at),
			}
		}
		want, err := json.Marshal(map[string]any{"repo": "did:plc:x<y", "writes": writes})
		if err != nil {
			t.Fatal(err)
		}
		if got := applyWritesBody("did:plc:x<y", ApplyWrites, 200, n, at); string(got) != string(want) {
			t.Errorf("applyWritesBody(%d):\n got %s\nwant %s", n, got, want)
		}
	}
}

// BenchmarkCreatePostBody compares the appended body with encoding/json's
// for the map it stands for.
func BenchmarkCreatePostBody(b *testing.B) {
	at := time.Now()
	b.Run("append", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			createPostBody("did:plc:ewvi7nxzyoun6zhxrhs64oiz", CreateSeq, i, at)
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			json.Marshal(map[string]any{"repo": "did:plc:ewvi7nxzyoun6zhxrhs64oiz", "collection": PostCollection, "record": postAt(CreateSeq, i, at)})
		}
	})
}
