package blob

import (
	"strings"
	"testing"

	"github.com/bluesky-social/indigo/atproto/syntax"
)

func TestRelPath(t *testing.T) {
	c, err := Prefix.Sum([]byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	k := Key{DID: syntax.DID("did:plc:abcdefghijklmnopqrstuvwx"), CID: c}
	rel := RelPath(k)
	if rel != "did_plc_abcdefghijklmnopqrstuvwx/"+c.String() {
		t.Fatalf("RelPath = %q", rel)
	}
	got, err := ParseRelPath(rel)
	if err != nil || got != k {
		t.Fatalf("ParseRelPath(%q) = %v, %v", rel, got, err)
	}
	for _, bad := range []string{
		"",
		c.String(),
		"../" + c.String(),
		"did_plc_x/../" + c.String(),
		"did_plc_x/sub/" + c.String(),
		"did:plc:x/" + c.String(),
		".tmp/" + c.String(),
		"did_plc_x/not-a-cid",
		"did_plc_x/" + strings.ToUpper(c.String()),
		`did_plc_x\` + c.String(),
	} {
		if k, err := ParseRelPath(bad); err == nil {
			t.Errorf("ParseRelPath(%q) = %v, want an error", bad, k)
		}
	}
}

// FuzzParseRelPath: names from a backup archive never parse to a key whose
// path differs from the name (so no name can escape the blob directory).
func FuzzParseRelPath(f *testing.F) {
	c, _ := Prefix.Sum([]byte("x"))
	f.Add("did_web_example.com/" + c.String())
	f.Add("../../etc/passwd")
	f.Fuzz(func(t *testing.T, rel string) {
		k, err := ParseRelPath(rel)
		if err != nil {
			return
		}
		if RelPath(k) != rel {
			t.Fatalf("ParseRelPath(%q) gives %v, whose path is %q", rel, k, RelPath(k))
		}
	})
}
