package cli_test

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"

	"stratus/internal/blob"
	"stratus/internal/config"
	"stratus/internal/pdstest"
)

// testBlob is an uploaded blob.
type testBlob struct {
	CID      string
	MimeType string
	Size     int64
	data     []byte
}

// pngBytes returns n bytes that sniff as a PNG, different for each seed.
func pngBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 2))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	copy(b, "\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
	return b
}

// uploadPNG uploads data as image/png with an account session token.
func uploadPNG(t *testing.T, s *pdstest.Server, token string, data []byte) testBlob {
	t.Helper()
	resp, b := s.Raw(t, http.MethodPost, "/xrpc/com.atproto.repo.uploadBlob",
		http.Header{"Authorization": {"Bearer " + token}, "Content-Type": {"image/png"}}, bytes.NewReader(data))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("uploadBlob: %d %s", resp.StatusCode, b)
	}
	var out struct {
		Blob struct {
			Ref struct {
				Link string `json:"$link"`
			} `json:"ref"`
			MimeType string `json:"mimeType"`
			Size     int64  `json:"size"`
		} `json:"blob"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return testBlob{CID: out.Blob.Ref.Link, MimeType: out.Blob.MimeType, Size: out.Blob.Size, data: data}
}

// imagePost is a post embedding the blobs.
func imagePost(text string, blobs ...testBlob) map[string]any {
	p := pdstest.Post(text)
	var images []any
	for _, b := range blobs {
		images = append(images, map[string]any{"alt": "", "image": map[string]any{
			"$type": "blob", "ref": map[string]any{"$link": b.CID}, "mimeType": b.MimeType, "size": b.Size}})
	}
	p["embed"] = map[string]any{"$type": "app.bsky.embed.images", "images": images}
	return p
}

// blobFile is where the disk store keeps a blob of s's account.
func blobFile(t *testing.T, s *pdstest.Server, c string) string {
	t.Helper()
	cc, err := cid.Decode(c)
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(s.DataDir(), config.BlobsDir, filepath.FromSlash(blob.RelPath(blob.Key{DID: syntax.DID(s.DID()), CID: cc})))
}

// TestCheckBlobs damages the blobs of a data directory in each way and
// checks that pds check names the blob, the record and the remedy, what
// getBlob answers for the damaged blob (never part of a blob), and what
// --repair can rebuild (the reference index and marks, from the records)
// and what it cannot (a lost or damaged file).
func TestCheckBlobs(t *testing.T) {
	t.Parallel()
	type fixture struct {
		s      *pdstest.Server
		img    testBlob // referenced by rec
		loose  testBlob // referenced by nothing
		rec    string   // rkey
		recURI string   // collection/rkey
	}
	cases := []struct {
		name     string
		damage   func(t *testing.T, f fixture) []string
		getBlob  int // status of getBlob for img afterwards; 0: not checked
		repaired bool
	}{
		{
			name: "blob file deleted",
			damage: func(t *testing.T, f fixture) []string {
				if err := os.Remove(blobFile(t, f.s, f.img.CID)); err != nil {
					t.Fatal(err)
				}
				return []string{"blob " + f.img.CID + " referenced by record " + f.recURI + " is missing from the blob store: restore blobs/did_web_pds.test/" + f.img.CID + " from a backup"}
			},
			getBlob: http.StatusNotFound,
		},
		{
			name: "blob file truncated",
			damage: func(t *testing.T, f fixture) []string {
				if err := os.Truncate(blobFile(t, f.s, f.img.CID), 100); err != nil {
					t.Fatal(err)
				}
				return []string{"blob " + f.img.CID + " referenced by record " + f.recURI + " has 100 bytes in the blob store, but 4000 were uploaded: it is damaged"}
			},
			getBlob: http.StatusInternalServerError,
		},
		{
			name: "blob file garbled",
			damage: func(t *testing.T, f fixture) []string {
				data := bytes.Clone(f.img.data)
				data[2000] ^= 0xff
				if err := os.WriteFile(blobFile(t, f.s, f.img.CID), data, 0o600); err != nil {
					t.Fatal(err)
				}
				return []string{"blob " + f.img.CID + " referenced by record " + f.recURI + " is damaged: its bytes in the blob store do not hash to its CID"}
			},
		},
		{
			name: "blob references lost",
			damage: func(t *testing.T, f fixture) []string {
				execSQL(t, f.s.DataDir(), "DELETE FROM blob_refs")
				return []string{"record " + f.recURI + " references blob " + f.img.CID + ", but the blob reference index does not list it"}
			},
			getBlob: http.StatusOK, repaired: true,
		},
		{
			name: "referenced blob marked unreferenced",
			damage: func(t *testing.T, f fixture) []string {
				execSQL(t, f.s.DataDir(), "UPDATE blobs SET unreferenced_at = 1 WHERE cid = ?", f.img.CID)
				return []string{"blob " + f.img.CID + " is referenced by record " + f.recURI + " but marked unreferenced, so the collector would delete it"}
			},
			repaired: true,
		},
		{
			name: "reference to a record that does not exist",
			damage: func(t *testing.T, f fixture) []string {
				execSQL(t, f.s.DataDir(), "INSERT INTO blob_refs (did, collection, rkey, cid, rev) VALUES (?, 'app.bsky.feed.post', 'gone', ?, 'x')", f.s.DID(), f.loose.CID)
				return []string{"the blob reference index says record app.bsky.feed.post/gone references blob " + f.loose.CID + ", but there is no such record"}
			},
			repaired: true,
		},
		{
			name: "unreferenced blob's file lost",
			damage: func(t *testing.T, f fixture) []string {
				if err := os.Remove(blobFile(t, f.s, f.loose.CID)); err != nil {
					t.Fatal(err)
				}
				return []string{"blob " + f.loose.CID + " (referenced by no record) is recorded but missing from the blob store"}
			},
			repaired: true,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := pdstest.NewServer(t)
			token := s.Login(t, s.Handle(), pdstest.Password).AccessJWT
			f := fixture{s: s, img: uploadPNG(t, s, token, pngBytes(1, 4000)), loose: uploadPNG(t, s, token, pngBytes(2, 3000))}
			f.rec = s.CreateRecord(t, "app.bsky.feed.post", "", imagePost("with an image", f.img)).RKey()
			f.recURI = "app.bsky.feed.post/" + f.rec
			if r := run(t, nil, "check", "--data-dir", s.DataDir()); r.code != 0 || !strings.Contains(r.stdout, "2 blobs") {
				t.Fatalf("check before the damage: %v", r)
			}

			want := tc.damage(t, f)
			r := run(t, nil, "check", "--data-dir", s.DataDir())
			if r.code != 1 {
				t.Fatalf("check of damaged blobs: %v", r)
			}
			for _, w := range want {
				if !strings.Contains(r.stdout, w) {
					t.Errorf("check output lacks %q:\n%s", w, r.stdout)
				}
			}
			if tc.getBlob != 0 {
				resp, body := s.Raw(t, http.MethodGet, "/xrpc/com.atproto.sync.getBlob?"+url.Values{"did": {s.DID()}, "cid": {f.img.CID}}.Encode(), nil, nil)
				switch {
				case resp.StatusCode != tc.getBlob:
					t.Errorf("getBlob of the damaged blob = %d %.200s, want %d", resp.StatusCode, body, tc.getBlob)
				case tc.getBlob == http.StatusOK && !bytes.Equal(body, f.img.data):
					t.Errorf("getBlob served %d other bytes", len(body))
				case tc.getBlob == http.StatusNotFound && !strings.Contains(string(body), `"BlobNotFound"`):
					t.Errorf("getBlob of a lost blob: %s", body)
				case tc.getBlob == http.StatusInternalServerError && !strings.HasPrefix(string(body), `{"error":`):
					t.Errorf("getBlob of a damaged blob sent part of it: %.100q", body)
				}
			}

			rr := run(t, nil, "check", "--repair", "--data-dir", s.DataDir())
			if tc.repaired != (rr.code == 0) {
				t.Fatalf("check --repair (repairable %v): %v", tc.repaired, rr)
			}
			if !tc.repaired {
				if !strings.Contains(rr.stdout, "from a backup") {
					t.Errorf("a lost blob is not pointed to the backup:\n%s", rr.stdout)
				}
				return
			}
			if !strings.Contains(rr.stdout, "repaired: ") || !strings.Contains(rr.stdout, "ok: no problems found") {
				t.Errorf("repair output:\n%s", rr.stdout)
			}
		})
	}
}
