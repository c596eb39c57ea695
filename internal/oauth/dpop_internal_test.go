package oauth

import (
	"testing"
	"time"
)

func TestNonceRotation(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	n := &nonces{secret: []byte("k"), now: func() time.Time { return now }}
	first := n.current()
	now = now.Add(nonceStep)
	if n.current() == first {
		t.Fatal("nonce did not rotate")
	}
	if !n.valid(first) {
		t.Fatal("the previous nonce must still be accepted")
	}
	now = now.Add(2 * nonceStep)
	if n.valid(first) {
		t.Fatal("a nonce three steps old must be refused")
	}
	if n.valid("") || n.valid("garbage") {
		t.Fatal("invalid nonces accepted")
	}
}

func TestReplayCache(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	c := &replayCache{seen: map[string]time.Time{}, now: func() time.Time { return now }}
	if !c.add("a", time.Minute) || c.add("a", time.Minute) {
		t.Fatal("replay not detected")
	}
	now = now.Add(2 * time.Minute)
	if !c.add("a", time.Minute) {
		t.Fatal("expired entry still blocks")
	}
}

func TestNormalizeHTU(t *testing.T) {
	for in, want := range map[string]string{
		"https://PDS.example/xrpc/x?y=1#f": "https://pds.example/xrpc/x",
		"https://pds.example":              "https://pds.example/",
		"http://a:8080/p":                  "http://a:8080/p",
	} {
		if got, err := normalizeHTU(in); err != nil || got != want {
			t.Errorf("normalizeHTU(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"ftp://a/b", "https://u:p@a/b", "/relative", "::"} {
		if _, err := normalizeHTU(bad); err == nil {
			t.Errorf("normalizeHTU(%q) accepted", bad)
		}
	}
}

func FuzzParseDPoP(f *testing.F) {
	f.Add("eyJhbGciOiJFUzI1NiJ9.e30.sig")
	f.Add("a.b.c")
	f.Add(`{"payload":"e30","signatures":[]}`)
	f.Add("eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIn19.e30.AA")
	f.Fuzz(func(t *testing.T, raw string) {
		p, err := ParseProof(raw)
		if err == nil && (p.JKT == "" || p.JTI == "" || p.HTM == "" || p.HTU == "") {
			t.Fatalf("accepted an incomplete proof: %+v", p)
		}
	})
}
