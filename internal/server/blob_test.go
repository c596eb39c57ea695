package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/atdata"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"stratus/internal/blob"
	"stratus/internal/config"
	"stratus/internal/pdstest"
	"stratus/internal/repo"
)

const (
	uploadBlob       = "com.atproto.repo.uploadBlob"
	getBlob          = "com.atproto.sync.getBlob"
	listBlobs        = "com.atproto.sync.listBlobs"
	listMissingBlobs = "com.atproto.repo.listMissingBlobs"
)

// blobRef is a blob as uploadBlob answers it and records embed it.
type blobRef struct {
	Type string `json:"$type"`
	Ref  struct {
		Link string `json:"$link"`
	} `json:"ref"`
	MimeType string `json:"mimeType"`
	Size     int64  `json:"size"`
}

func (b blobRef) json() obj {
	return obj{"$type": "blob", "ref": obj{"$link": b.Ref.Link}, "mimeType": b.MimeType, "size": b.Size}
}

// withS3 configures a server to keep its blobs in an in-process S3
// service.
func withS3(t *testing.T) pdstest.Option {
	t.Helper()
	backend := s3mem.New()
	if err := backend.CreateBucket("pds-blobs"); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(gofakes3.New(backend).Server())
	// gofakes3 writes a header twice on some errors; net/http's complaint
	// about it is noise.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.Start()
	t.Cleanup(srv.Close)
	return pdstest.WithConfig(func(c *config.Config) {
		c.BlobStore = "s3"
		c.BlobS3Endpoint = srv.URL
		c.BlobS3Bucket = "pds-blobs"
		c.BlobS3Region = "us-east-1"
		c.BlobS3AccessKey = "test-access-key"
		c.BlobS3SecretKey = "test-secret-key"
		c.BlobS3PathStyle = true
	})
}

// forEachStore runs fn against a server on each blob store.
func forEachStore(t *testing.T, fn func(t *testing.T, s *pdstest.Server), opts ...pdstest.Option) {
	for _, name := range []string{"disk", "s3"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			o := opts
			if name == "s3" {
				o = append(append([]pdstest.Option(nil), opts...), withS3(t))
			}
			fn(t, pdstest.NewServer(t, o...))
		})
	}
}

func upload(t testing.TB, s *pdstest.Server, token, contentType string, data []byte) blobRef {
	t.Helper()
	st, b := uploadRaw(t, s, token, contentType, data)
	if st != http.StatusOK {
		t.Fatalf("uploadBlob: %d %s", st, b)
	}
	var out struct {
		Blob blobRef `json:"blob"`
	}
	decode(t, b, &out)
	if out.Blob.Type != "blob" {
		t.Fatalf("uploadBlob answered %s", b)
	}
	return out.Blob
}

func uploadRaw(t testing.TB, s *pdstest.Server, token, contentType string, data []byte) (int, []byte) {
	t.Helper()
	h := http.Header{"Authorization": {"Bearer " + token}}
	if contentType != "" {
		h.Set("Content-Type", contentType)
	}
	resp, b := s.Raw(t, post, "/xrpc/"+uploadBlob, h, bytes.NewReader(data))
	return resp.StatusCode, b
}

func fetchBlob(t testing.TB, s *pdstest.Server, did, c string, header http.Header) (*http.Response, []byte) {
	t.Helper()
	return s.Raw(t, get, "/xrpc/"+getBlob+"?"+q("did", did, "cid", c).Encode(), header, nil)
}

func blobCID(t testing.TB, data []byte) string {
	t.Helper()
	c, err := blob.Prefix.Sum(data)
	if err != nil {
		t.Fatal(err)
	}
	return c.String()
}

// Sample files: real headers followed by pseudo-random bytes.
func sample(head string, n int) []byte {
	r := rand.New(rand.NewPCG(uint64(n), uint64(len(head))))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	copy(b, head)
	return b
}

var (
	samplePNG  = sample("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", 40_000)
	sampleJPEG = sample("\xff\xd8\xff\xe0\x00\x10JFIF\x00", 30_000)
	sampleMP4  = sample("\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00", 300_000)
	sampleBin  = sample("", 5_000)
)

func imagePost(text string, images ...blobRef) obj {
	p := pdstest.Post(text)
	var list []any
	for _, b := range images {
		list = append(list, obj{"alt": "", "image": b.json()})
	}
	p["embed"] = obj{"$type": "app.bsky.embed.images", "images": list}
	return p
}

func TestBlobUploadAndFetch(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, s *pdstest.Server) {
		tok := s.Login(t, s.Handle(), pdstest.Password).AccessJWT
		for _, tc := range []struct {
			name, declared string
			data           []byte
			want           string
		}{
			{"png", "image/png", samplePNG, "image/png"},
			{"jpeg as */*", "*/*", sampleJPEG, "image/jpeg"},
			{"mp4", "video/mp4", sampleMP4, "video/mp4"},
			{"binary", "", sampleBin, "application/octet-stream"},
			{"html", "text/html", []byte("<html><script>alert(document.domain)</script></html>"), "application/octet-stream"},
			{"empty", "", nil, "application/octet-stream"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				ref := upload(t, s, tok, tc.declared, tc.data)
				if ref.Ref.Link != blobCID(t, tc.data) || !strings.HasPrefix(ref.Ref.Link, "bafkrei") {
					t.Errorf("cid = %s, want %s", ref.Ref.Link, blobCID(t, tc.data))
				}
				if ref.Size != int64(len(tc.data)) || ref.MimeType != tc.want {
					t.Errorf("uploadBlob = %s %d, want %s %d", ref.MimeType, ref.Size, tc.want, len(tc.data))
				}
				// Idempotent: the same bytes again give the same blob.
				if again := upload(t, s, tok, tc.declared, tc.data); again != ref {
					t.Errorf("re-upload = %+v, want %+v", again, ref)
				}
				resp, body := fetchBlob(t, s, s.DID(), ref.Ref.Link, nil)
				if resp.StatusCode != http.StatusOK || !bytes.Equal(body, tc.data) {
					t.Fatalf("getBlob: %d, %d bytes (want %d)", resp.StatusCode, len(body), len(tc.data))
				}
				for k, want := range map[string]string{
					"Content-Type":            tc.want,
					"Content-Length":          strconv.Itoa(len(tc.data)),
					"Etag":                    `"` + ref.Ref.Link + `"`,
					"X-Content-Type-Options":  "nosniff",
					"Content-Security-Policy": "default-src 'none'; sandbox",
					"Content-Disposition":     `attachment; filename="` + ref.Ref.Link + `"`,
				} {
					if got := resp.Header.Get(k); got != want {
						t.Errorf("%s = %q, want %q", k, got, want)
					}
				}
				if cc := resp.Header.Get("Cache-Control"); !strings.Contains(cc, "immutable") {
					t.Errorf("Cache-Control = %q", cc)
				}
			})
		}

		// HEAD: the headers without the body.
		resp, body := s.Raw(t, http.MethodHead, "/xrpc/"+getBlob+"?"+q("did", s.DID(), "cid", blobCID(t, sampleMP4)).Encode(), nil, nil)
		if resp.StatusCode != http.StatusOK || len(body) != 0 || resp.ContentLength != int64(len(sampleMP4)) {
			t.Errorf("HEAD: %d, %d body bytes, length %d", resp.StatusCode, len(body), resp.ContentLength)
		}
	})
}

func TestBlobRange(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, s *pdstest.Server) {
		tok := s.Login(t, s.Handle(), pdstest.Password).AccessJWT
		ref := upload(t, s, tok, "video/mp4", sampleMP4)
		n := len(sampleMP4)
		rng := func(v string) (*http.Response, []byte) {
			return fetchBlob(t, s, s.DID(), ref.Ref.Link, http.Header{"Range": {v}})
		}
		for _, tc := range []struct {
			rng      string
			from, to int // inclusive
		}{
			{"bytes=0-0", 0, 0},
			{"bytes=100-199", 100, 199},
			{"bytes=250000-", 250000, n - 1},
			{"bytes=-1000", n - 1000, n - 1},
			{"bytes=299000-999999999", 299000, n - 1},
		} {
			resp, body := rng(tc.rng)
			if resp.StatusCode != http.StatusPartialContent {
				t.Errorf("%s: status %d", tc.rng, resp.StatusCode)
				continue
			}
			if !bytes.Equal(body, sampleMP4[tc.from:tc.to+1]) {
				t.Errorf("%s: wrong bytes (%d)", tc.rng, len(body))
			}
			if want := fmt.Sprintf("bytes %d-%d/%d", tc.from, tc.to, n); resp.Header.Get("Content-Range") != want {
				t.Errorf("%s: Content-Range %q, want %q", tc.rng, resp.Header.Get("Content-Range"), want)
			}
		}
		// Several ranges: a multipart answer holding both.
		resp, body := rng("bytes=0-9,1000-1009")
		if resp.StatusCode != http.StatusPartialContent || !strings.HasPrefix(resp.Header.Get("Content-Type"), "multipart/byteranges") ||
			!bytes.Contains(body, sampleMP4[1000:1010]) || !bytes.Contains(body, sampleMP4[0:10]) {
			t.Errorf("multiple ranges: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		// Unsatisfiable and malformed ranges.
		if resp, _ := rng(fmt.Sprintf("bytes=%d-", n)); resp.StatusCode != http.StatusRequestedRangeNotSatisfiable {
			t.Errorf("range past the end: %d", resp.StatusCode)
		}
		if resp, body := rng("bytes=oops"); resp.StatusCode != http.StatusRequestedRangeNotSatisfiable && !(resp.StatusCode == 200 && bytes.Equal(body, sampleMP4)) {
			t.Errorf("malformed range: %d", resp.StatusCode)
		}
		// Conditional: the ETag revalidates.
		if resp, _ := fetchBlob(t, s, s.DID(), ref.Ref.Link, http.Header{"If-None-Match": {`"` + ref.Ref.Link + `"`}}); resp.StatusCode != http.StatusNotModified {
			t.Errorf("If-None-Match: %d", resp.StatusCode)
		}
	})
}

func TestBlobErrors(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t)
	tok := s.Login(t, s.Handle(), pdstest.Password).AccessJWT
	ref := upload(t, s, tok, "image/png", samplePNG)

	resp, b := fetchBlob(t, s, "did:web:elsewhere.test", ref.Ref.Link, nil)
	pdstest.MustError(t, resp.StatusCode, b, http.StatusNotFound, "RepoNotFound")
	resp, b = fetchBlob(t, s, s.DID(), blobCID(t, []byte("never uploaded")), nil)
	pdstest.MustError(t, resp.StatusCode, b, http.StatusNotFound, "BlobNotFound")
	resp, b = fetchBlob(t, s, s.DID(), "not-a-cid", nil)
	pdstest.MustError(t, resp.StatusCode, b, http.StatusBadRequest, "InvalidRequest")

	// Uploads need a session; compressed bodies are refused.
	st, b := s.Do(t, post, uploadBlob, nil, []byte("x"), "")
	pdstest.MustError(t, st, b, http.StatusUnauthorized, "AuthMissing")
	h := http.Header{"Authorization": {"Bearer " + tok}, "Content-Encoding": {"gzip"}}
	r, b := s.Raw(t, post, "/xrpc/"+uploadBlob, h, strings.NewReader("x"))
	pdstest.MustError(t, r.StatusCode, b, http.StatusUnsupportedMediaType, "UnsupportedMediaType")

	// App-password sessions may upload.
	var ap struct {
		Password string `json:"password"`
	}
	s.Call(t, post, "com.atproto.server.createAppPassword", nil, obj{"name": "phone"}, s.AdminToken(), &ap)
	appTok := s.Login(t, s.Handle(), ap.Password).AccessJWT
	upload(t, s, appTok, "image/jpeg", sampleJPEG)

	// A deactivated account's blobs are served only to itself.
	s.Call(t, post, deactivateAccount, nil, nil, tok, nil)
	resp, b = fetchBlob(t, s, s.DID(), ref.Ref.Link, nil)
	pdstest.MustError(t, resp.StatusCode, b, http.StatusBadRequest, "RepoDeactivated")
	resp, b = fetchBlob(t, s, s.DID(), ref.Ref.Link, http.Header{"Authorization": {"Bearer " + tok}})
	if resp.StatusCode != http.StatusOK || !bytes.Equal(b, samplePNG) {
		t.Errorf("own blob while deactivated: %d", resp.StatusCode)
	}
	if cc := resp.Header.Get("Cache-Control"); !strings.Contains(cc, "no-store") {
		t.Errorf("Cache-Control for a deactivated account's blob = %q", cc)
	}
	// Uploads still work while deactivated, as in the reference PDS.
	upload(t, s, tok, "", sampleBin)
}

func tempFiles(t *testing.T, s *pdstest.Server) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(s.DataDir(), config.BlobsDir, ".tmp"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// countingReader counts the bytes read from it.
type countingReader struct {
	mu sync.Mutex
	r  io.Reader
	n  int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.mu.Lock()
	c.n += int64(n)
	c.mu.Unlock()
	return n, err
}

func (c *countingReader) count() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

func TestBlobTooLarge(t *testing.T) {
	t.Parallel()
	const limit = 100_000
	forEachStore(t, func(t *testing.T, s *pdstest.Server) {
		tok := s.Login(t, s.Handle(), pdstest.Password).AccessJWT
		data := sample("", limit+1)
		st, b := uploadRaw(t, s, tok, "", data)
		pdstest.MustError(t, st, b, http.StatusBadRequest, "BlobTooLarge")
		if got := tempFiles(t, s); len(got) != 0 {
			t.Errorf("temporary files left: %v", got)
		}
		upload(t, s, tok, "", data[:limit]) // exactly the limit is fine

		// Without a Content-Length the server stops reading just past the
		// limit: a 64 MB body is refused long before it is all sent.
		body := &countingReader{r: io.LimitReader(zeros{}, 64<<20)}
		req, err := http.NewRequest(post, s.URL()+"/xrpc/"+uploadBlob, body)
		if err != nil {
			t.Fatal(err)
		}
		req.ContentLength = -1
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := s.Client().Do(req)
		if err != nil {
			t.Fatalf("chunked upload: %v", err)
		}
		b, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		pdstest.MustError(t, resp.StatusCode, b, http.StatusBadRequest, "BlobTooLarge")
		if n := body.count(); n >= 64<<20 {
			t.Errorf("the client sent the whole body (%d bytes)", n)
		}

		// A declared Content-Length over the limit is refused before reading.
		req, _ = http.NewRequest(post, s.URL()+"/xrpc/"+uploadBlob, bytes.NewReader(make([]byte, limit+10)))
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err = s.Client().Do(req)
		if err != nil {
			t.Fatalf("upload: %v", err)
		}
		b, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		pdstest.MustError(t, resp.StatusCode, b, http.StatusBadRequest, "BlobTooLarge")
		if got := tempFiles(t, s); len(got) != 0 {
			t.Errorf("temporary files left: %v", got)
		}
	}, pdstest.WithConfig(func(c *config.Config) { c.BlobMaxSize = limit }))
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// collectBlobs runs a blob collection as if the clock read now+after.
func collectBlobs(t *testing.T, s *pdstest.Server, after time.Duration) blob.Collected {
	t.Helper()
	got, err := s.Server().Blobs().Collect(context.Background(), time.Now().Add(after))
	if err != nil {
		t.Fatalf("collect: %v", err)
	}
	return got
}

func TestBlobLifecycle(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, s *pdstest.Server) {
		tok := s.Login(t, s.Handle(), pdstest.Password).AccessJWT
		img := upload(t, s, tok, "image/png", samplePNG)
		orphan := upload(t, s, tok, "image/jpeg", sampleJPEG)

		// A record must reference a held blob, as it was uploaded.
		missing := img
		missing.Ref.Link = blobCID(t, []byte("not uploaded"))
		for _, tc := range []struct {
			ref  blobRef
			name string
		}{
			{missing, "BlobNotFound"},
			{func() blobRef { b := img; b.MimeType = "image/jpeg"; return b }(), "InvalidMimeType"},
			{func() blobRef { b := img; b.Size++; return b }(), "InvalidSize"},
		} {
			st, b := s.Do(t, post, createRecord, nil, obj{"repo": s.DID(), "collection": postColl, "record": imagePost("bad", tc.ref)}, tok)
			pdstest.MustError(t, st, b, http.StatusBadRequest, tc.name)
		}
		var w pdstest.WriteResult
		s.Call(t, post, createRecord, nil, obj{"repo": s.DID(), "collection": postColl, "record": imagePost("look", img)}, tok, &w)

		// The commit's firehose event lists the blob.
		if ev := s.LastEventPayload(t, "commit"); !bytes.Contains(ev, mustCID(t, img.Ref.Link).Bytes()) {
			t.Errorf("#commit does not list the blob")
		}
		var lb struct {
			CIDs   []string `json:"cids"`
			Cursor string   `json:"cursor"`
		}
		s.Call(t, get, listBlobs, q("did", s.DID()), nil, "", &lb)
		if len(lb.CIDs) != 1 || lb.CIDs[0] != img.Ref.Link {
			t.Errorf("listBlobs = %v, want only the referenced %s", lb.CIDs, img.Ref.Link)
		}
		s.Call(t, get, listBlobs, q("did", s.DID(), "since", w.Commit.Rev), nil, "", &lb)
		if len(lb.CIDs) != 0 {
			t.Errorf("listBlobs since the commit = %v, want none", lb.CIDs)
		}

		// Within the TTL nothing is collected; after it, only the upload
		// no record references.
		if got := collectBlobs(t, s, 30*time.Minute); got.Blobs != 0 {
			t.Errorf("collected %d blobs within the TTL", got.Blobs)
		}
		if got := collectBlobs(t, s, 2*time.Hour); got.Blobs != 1 {
			t.Errorf("collected %d blobs, want the unreferenced upload", got.Blobs)
		}
		if resp, _ := fetchBlob(t, s, s.DID(), orphan.Ref.Link, nil); resp.StatusCode != http.StatusNotFound {
			t.Errorf("unreferenced upload still served: %d", resp.StatusCode)
		}
		if resp, body := fetchBlob(t, s, s.DID(), img.Ref.Link, nil); resp.StatusCode != http.StatusOK || !bytes.Equal(body, samplePNG) {
			t.Fatalf("referenced blob lost: %d", resp.StatusCode)
		}

		// A second record sharing the blob keeps it when the first goes.
		var w2 pdstest.WriteResult
		s.Call(t, post, createRecord, nil, obj{"repo": s.DID(), "collection": postColl, "record": imagePost("again", img)}, tok, &w2)
		s.Call(t, post, deleteRecord, nil, obj{"repo": s.DID(), "collection": postColl, "rkey": w.RKey()}, tok, nil)
		if got := collectBlobs(t, s, 2*time.Hour); got.Blobs != 0 {
			t.Errorf("collected a blob another record references")
		}
		// An update that drops the image unlinks it; after the TTL it goes.
		s.Call(t, post, putRecord, nil, obj{"repo": s.DID(), "collection": postColl, "rkey": w2.RKey(), "record": pdstest.Post("no image")}, tok, nil)
		if got := collectBlobs(t, s, 30*time.Minute); got.Blobs != 0 {
			t.Errorf("collected a blob within the grace period")
		}
		stats, err := s.Server().Blobs().Stats(context.Background())
		if err != nil || stats.Blobs != 1 || stats.Bytes != int64(len(samplePNG)) || stats.Unreferenced != 1 {
			t.Errorf("Stats = %+v, %v", stats, err)
		}
		if got := collectBlobs(t, s, 2*time.Hour); got.Blobs != 1 {
			t.Errorf("collected %d blobs after the last reference went, want 1", got.Blobs)
		}
		resp, b := fetchBlob(t, s, s.DID(), img.Ref.Link, nil)
		pdstest.MustError(t, resp.StatusCode, b, http.StatusNotFound, "BlobNotFound")
		if _, err := s.Server().Blobs().Store().Stat(context.Background(), blob.Key{DID: syntax.DID(s.DID()), CID: mustCID(t, img.Ref.Link)}); err == nil {
			t.Errorf("collected blob still in the store")
		}
		if p, err := s.Server().Blobs().Check(context.Background()); err != nil || len(p.Lost)+len(p.Orphans)+len(p.WrongSize)+len(p.Missing) != 0 {
			t.Errorf("Check = %+v, %v", p, err)
		}
	})
}

func mustCID(t testing.TB, s string) cid.Cid {
	t.Helper()
	c, err := cid.Decode(s)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestBlobCollectRacesWrites runs collections of expired uploads while
// records referencing them are written: each write must either land with
// its blob kept, or fail with BlobNotFound. A committed record never
// references a collected blob.
func TestBlobCollectRacesWrites(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t)
	tok := s.Login(t, s.Handle(), pdstest.Password).AccessJWT
	const rounds = 16
	landed, refused := 0, 0
	for i := range rounds {
		data := sample(fmt.Sprintf("\x89PNG\r\n\x1a\n%d", i), 2000+i)
		ref := upload(t, s, tok, "image/png", data)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Staggered starts, so that some collections come before the
			// write's transaction and some after it.
			time.Sleep(time.Duration(i%8) * 700 * time.Microsecond)
			s.Server().Blobs().Collect(context.Background(), time.Now().Add(2*time.Hour))
		}()
		st, b := s.Do(t, post, createRecord, nil, obj{"repo": s.DID(), "collection": postColl, "record": imagePost("race", ref)}, tok)
		wg.Wait()
		switch st {
		case http.StatusOK:
			landed++
			resp, body := fetchBlob(t, s, s.DID(), ref.Ref.Link, nil)
			if resp.StatusCode != http.StatusOK || !bytes.Equal(body, data) {
				t.Fatalf("round %d: record committed but its blob is gone: %d", i, resp.StatusCode)
			}
		default:
			pdstest.MustError(t, st, b, http.StatusBadRequest, "BlobNotFound")
			refused++
		}
	}
	t.Logf("%d writes landed first, %d found the blob collected", landed, refused)
	// Every blob still referenced survives any number of collections.
	collectBlobs(t, s, 24*time.Hour)
	if p, err := s.Server().Blobs().Check(context.Background()); err != nil || len(p.Lost) != 0 || len(p.Orphans) != 0 {
		t.Fatalf("Check = %+v, %v", p, err)
	}
	var lb struct {
		CIDs []string `json:"cids"`
	}
	s.Call(t, get, listBlobs, q("did", s.DID()), nil, "", &lb)
	if len(lb.CIDs) != landed {
		t.Errorf("listBlobs has %d blobs, want the %d referenced", len(lb.CIDs), landed)
	}
}

// TestBlobCollectAfterCrash restarts the server with a store object whose
// index row is gone, the state a crash between the collector's two steps
// leaves: the object is swept once it has been orphaned for a TTL.
func TestBlobCollectAfterCrash(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, s *pdstest.Server) {
		ctx := context.Background()
		tok := s.Login(t, s.Handle(), pdstest.Password).AccessJWT
		kept := upload(t, s, tok, "image/png", samplePNG)
		s.Call(t, post, createRecord, nil, obj{"repo": s.DID(), "collection": postColl, "record": imagePost("kept", kept)}, tok, nil)
		data := []byte("an object the index forgot")
		k := blob.Key{DID: syntax.DID(s.DID()), CID: mustCID(t, blobCID(t, data))}
		if err := s.Server().Blobs().Store().Put(ctx, k, bytes.NewReader(data), int64(len(data))); err != nil {
			t.Fatal(err)
		}
		s.Restart(t)
		if got := collectBlobs(t, s, 0); got.Orphans != 0 {
			t.Errorf("orphan deleted on first sight")
		}
		if got := collectBlobs(t, s, 2*time.Hour); got.Orphans != 1 {
			t.Errorf("swept %d orphans, want 1", got.Orphans)
		}
		if _, err := s.Server().Blobs().Store().Stat(ctx, k); err == nil {
			t.Errorf("orphan object still stored")
		}
		if resp, body := fetchBlob(t, s, s.DID(), kept.Ref.Link, nil); resp.StatusCode != http.StatusOK || !bytes.Equal(body, samplePNG) {
			t.Errorf("referenced blob lost across restart and collection: %d", resp.StatusCode)
		}
	})
}

// TestMissingBlobs covers records imported before their blobs: they are
// listed by listMissingBlobs until uploaded, and the upload is then
// referenced at once.
func TestMissingBlobs(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t)
	ctx := context.Background()
	tok := s.Login(t, s.Handle(), pdstest.Password).AccessJWT
	did := syntax.DID(s.DID())
	ref := blobRef{MimeType: "image/png", Size: int64(len(samplePNG))}
	ref.Ref.Link = blobCID(t, samplePNG)
	rec, err := syntaxRecord(imagePost("imported", ref))
	if err != nil {
		t.Fatal(err)
	}
	writes := []repo.Write{{Action: repo.Create, Collection: postColl, RKey: "3kimported2aa", Record: rec}}
	if _, err := s.Server().Repos().ApplyWrites(ctx, did, writes, repo.Options{}); err == nil {
		t.Fatalf("a write referencing a missing blob succeeded without AllowMissingBlobs")
	}
	if _, err := s.Server().Repos().ApplyWrites(ctx, did, writes, repo.Options{AllowMissingBlobs: true}); err != nil {
		t.Fatalf("import write: %v", err)
	}
	var out struct {
		Blobs []struct {
			CID       string `json:"cid"`
			RecordURI string `json:"recordUri"`
		} `json:"blobs"`
		Cursor string `json:"cursor"`
	}
	s.Call(t, get, listMissingBlobs, nil, nil, tok, &out)
	want := "at://" + s.DID() + "/" + postColl + "/3kimported2aa"
	if len(out.Blobs) != 1 || out.Blobs[0].CID != ref.Ref.Link || out.Blobs[0].RecordURI != want {
		t.Fatalf("listMissingBlobs = %+v", out)
	}
	st, b := s.Do(t, get, listMissingBlobs, nil, nil, "")
	pdstest.MustError(t, st, b, http.StatusUnauthorized, "AuthMissing")
	if stats, _ := s.Server().Blobs().Stats(ctx); stats.Missing != 1 {
		t.Errorf("Stats.Missing = %d", stats.Missing)
	}

	upload(t, s, tok, "image/png", samplePNG)
	s.Call(t, get, listMissingBlobs, nil, nil, tok, &out)
	if len(out.Blobs) != 0 {
		t.Errorf("listMissingBlobs after upload = %+v", out.Blobs)
	}
	if got := collectBlobs(t, s, 2*time.Hour); got.Blobs != 0 {
		t.Errorf("collected a blob that an imported record references")
	}
}

// syntaxRecord turns a JSON-shaped record into atdata form.
func syntaxRecord(o obj) (map[string]any, error) {
	b, err := json.Marshal(o)
	if err != nil {
		return nil, err
	}
	return atdata.UnmarshalJSON(b)
}

func TestListBlobsPaging(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t)
	tok := s.Login(t, s.Handle(), pdstest.Password).AccessJWT
	want := map[string]bool{}
	for i := range 5 {
		ref := upload(t, s, tok, "image/png", sample(fmt.Sprintf("\x89PNG\r\n\x1a\npage%d", i), 100))
		s.Call(t, post, createRecord, nil, obj{"repo": s.DID(), "collection": postColl, "record": imagePost("p", ref)}, tok, nil)
		want[ref.Ref.Link] = true
	}
	var got []string
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 5 {
			t.Fatal("listBlobs does not end")
		}
		var out struct {
			CIDs   []string `json:"cids"`
			Cursor string   `json:"cursor"`
		}
		s.Call(t, get, listBlobs, q("did", s.DID(), "limit", "2", "cursor", cursor), nil, "", &out)
		got = append(got, out.CIDs...)
		if out.Cursor == "" {
			break
		}
		cursor = out.Cursor
	}
	if len(got) != 5 {
		t.Fatalf("listBlobs pages = %v", got)
	}
	for i, c := range got {
		if !want[c] || (i > 0 && got[i-1] >= c) {
			t.Errorf("listBlobs pages = %v: not the blobs in CID order", got)
		}
	}
	st, b := s.Do(t, get, listBlobs, q("did", s.DID(), "limit", "0"), nil, "")
	pdstest.MustError(t, st, b, http.StatusBadRequest, "InvalidRequest")
	st, b = s.Do(t, get, listBlobs, q("did", s.DID(), "since", "nope"), nil, "")
	pdstest.MustError(t, st, b, http.StatusBadRequest, "InvalidRequest")
}

// TestBlobUploadMemory uploads 100 MB and checks the server's heap grows by
// less than 10 MB while it does: the body is streamed to disk, never held.
func TestBlobUploadMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("uploads 100 MB")
	}
	// Not parallel: the heap is shared with every test of the binary.
	s := pdstest.NewServer(t)
	tok := s.Login(t, s.Handle(), pdstest.Password).AccessJWT
	const size = 100 << 20
	peak := heapPeak(t, func() {
		req, err := http.NewRequest(post, s.URL()+"/xrpc/"+uploadBlob, io.LimitReader(zeros{}, size))
		if err != nil {
			t.Fatal(err)
		}
		req.ContentLength = size
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := s.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("upload: %d %s", resp.StatusCode, b)
		}
	})
	t.Logf("heap grew by at most %.1f MB during a 100 MB upload", float64(peak)/(1<<20))
	if peak > 10<<20 {
		t.Errorf("heap grew by %d bytes during a 100 MB upload, want < 10 MB", peak)
	}
}

// heapPeak runs fn and returns how far the live heap rose above its level
// before fn, sampled every few milliseconds.
func heapPeak(t *testing.T, fn func()) uint64 {
	t.Helper()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	var peak uint64
	done := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > base && ms.HeapAlloc-base > peak {
				peak = ms.HeapAlloc - base
			}
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	fn()
	close(done)
	<-sampled
	return peak
}

// checkAccountStatus counts the blobs records reference and the blobs
// held, and another service (the video service) can upload for the
// account with a service token bound to uploadBlob.
func TestBlobAccountCountsAndServiceUpload(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t)
	tok := s.Login(t, s.Handle(), pdstest.Password).AccessJWT
	img := upload(t, s, tok, "image/png", samplePNG)
	s.Call(t, post, createRecord, nil, obj{"repo": s.DID(), "collection": postColl, "record": imagePost("look", img)}, tok, nil)

	// A service token for uploadBlob at this server, as the video service
	// would hold one.
	var st struct {
		Token string `json:"token"`
	}
	aud := "did:web:" + s.Hostname()
	s.Call(t, http.MethodGet, "com.atproto.server.getServiceAuth", url.Values{"aud": {aud}, "lxm": {uploadBlob}}, nil, tok, &st)
	video := upload(t, s, st.Token, "video/mp4", sample("\x00\x00\x00\x18ftypmp42", 4096))
	if video.MimeType != "video/mp4" {
		t.Fatalf("service upload stored %q", video.MimeType)
	}
	// The token is single-use, and bound to uploadBlob.
	if code, b := uploadRaw(t, s, st.Token, "video/mp4", sample("\x00\x00\x00\x18ftypmp42", 10)); code != http.StatusUnauthorized {
		t.Fatalf("replayed service token: %d %s", code, b)
	}
	s.Call(t, http.MethodGet, "com.atproto.server.getServiceAuth", url.Values{"aud": {aud}, "lxm": {uploadBlob}}, nil, tok, &st)
	if code, b := s.Do(t, post, createRecord, nil, obj{"repo": s.DID(), "collection": postColl, "record": imagePost("x")}, st.Token); code != http.StatusUnauthorized {
		t.Fatalf("service token on createRecord: %d %s", code, b)
	}

	var status struct {
		ExpectedBlobs int64 `json:"expectedBlobs"`
		ImportedBlobs int64 `json:"importedBlobs"`
	}
	s.Call(t, http.MethodGet, "com.atproto.server.checkAccountStatus", nil, nil, tok, &status)
	if status.ExpectedBlobs != 1 || status.ImportedBlobs != 2 {
		t.Fatalf("checkAccountStatus: expected %d imported %d, want 1 and 2", status.ExpectedBlobs, status.ImportedBlobs)
	}
}
