package backup

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"io"
	"log"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"stratus/internal/blob"
	"stratus/internal/config"
	"stratus/internal/pdstest"
)

// uploaded is a blob as uploadBlob answers it.
type uploaded struct {
	Ref struct {
		Link string `json:"$link"`
	} `json:"ref"`
	MimeType string `json:"mimeType"`
	Size     int64  `json:"size"`
}

func upload(t *testing.T, s *pdstest.Server, seed uint64) uploaded {
	t.Helper()
	data := make([]byte, 3000+int(seed)*100)
	r := rand.New(rand.NewPCG(seed, 1))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	copy(data, "\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
	resp, b := s.Raw(t, http.MethodPost, "/xrpc/com.atproto.repo.uploadBlob",
		http.Header{"Authorization": {"Bearer " + s.Login(t, s.Handle(), pdstest.Password).AccessJWT}, "Content-Type": {"image/png"}}, bytes.NewReader(data))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("uploadBlob: %d %s", resp.StatusCode, b)
	}
	var out struct {
		Blob uploaded `json:"blob"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out.Blob
}

// withImage creates a post embedding b and returns its rkey.
func withImage(t *testing.T, s *pdstest.Server, b uploaded) string {
	t.Helper()
	p := pdstest.Post("with a blob")
	p["embed"] = map[string]any{"$type": "app.bsky.embed.images", "images": []any{map[string]any{"alt": "",
		"image": map[string]any{"$type": "blob", "ref": map[string]any{"$link": b.Ref.Link}, "mimeType": b.MimeType, "size": b.Size}}}}
	return s.CreateRecord(t, "app.bsky.feed.post", "", p).RKey()
}

func deleteRecord(t *testing.T, s *pdstest.Server, rkey string) {
	t.Helper()
	s.Call(t, http.MethodPost, "com.atproto.repo.deleteRecord", nil, map[string]any{
		"repo": s.DID(), "collection": "app.bsky.feed.post", "rkey": rkey}, s.AdminToken(), nil)
}

// collect runs a collection as if the clock read a day later: every blob
// unreferenced now is past its TTL.
func collect(t *testing.T, s *pdstest.Server) blob.Collected {
	t.Helper()
	got, err := s.Server().Blobs().Collect(context.Background(), time.Now().Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func options(s *pdstest.Server) Options {
	pub := s.SigningKey()
	return Options{
		Version: "test",
		Keys:    func(string) (atcrypto.PublicKey, error) { return pub, nil },
		Blobs:   s.Server().Blobs().Store(),
	}
}

func exec(t *testing.T, dir, q string) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, config.DatabaseFile)+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(q); err != nil {
		t.Fatal(err)
	}
}

func key(t *testing.T, did string, b uploaded) blob.Key {
	t.Helper()
	c, err := cid.Decode(b.Ref.Link)
	if err != nil {
		t.Fatal(err)
	}
	return blob.Key{DID: syntax.DID(did), CID: c}
}

// s3Store returns an in-process S3 service's configuration.
func s3Store(t *testing.T, bucket string) func(*config.Config) {
	t.Helper()
	backend := s3mem.New()
	if err := backend.CreateBucket(bucket); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(gofakes3.New(backend).Server())
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.Start()
	t.Cleanup(srv.Close)
	return func(c *config.Config) {
		c.BlobStore, c.BlobS3Endpoint, c.BlobS3Bucket, c.BlobS3Region = "s3", srv.URL, bucket, "us-east-1"
		c.BlobS3AccessKey, c.BlobS3SecretKey, c.BlobS3PathStyle = "test-access-key", "test-secret-key", true
	}
}

// TestBackupBlobsRacingCollection takes backups while a record is deleted
// and a blob collection runs between the snapshot and the blob copy (the
// worst moment), on the disk and the S3 store. The backup's hold keeps
// every blob the snapshot lists; without the hold (an older server, or an
// expired hold) a collected unreferenced blob is dropped from the backup's
// index, and a collected blob the snapshot's records still reference fails
// the backup rather than leaving a dangling reference.
func TestBackupBlobsRacingCollection(t *testing.T) {
	for _, store := range []string{"disk", "s3"} {
		t.Run(store, func(t *testing.T) {
			t.Parallel()
			var opts []pdstest.Option
			if store == "s3" {
				opts = append(opts, pdstest.WithConfig(s3Store(t, "pds-blobs")))
			}
			s := pdstest.NewServer(t, opts...)
			kept, gone, loose := upload(t, s, 1), upload(t, s, 2), upload(t, s, 3)
			withImage(t, s, kept)
			goneRec := withImage(t, s, gone)

			// With the hold: the collection racing the backup deletes
			// nothing, and the backup holds all three blobs.
			o := options(s)
			var during blob.Collected
			o.afterSnapshot = func() {
				deleteRecord(t, s, goneRec)
				during = collect(t, s)
			}
			dest := filepath.Join(t.TempDir(), "held")
			m, err := Create(context.Background(), s.DataDir(), dest, o)
			if err != nil {
				t.Fatalf("backup: %v", err)
			}
			if during.Blobs != 0 {
				t.Errorf("a collection during the backup deleted %d blobs despite the hold", during.Blobs)
			}
			if m.Blobs != 3 || len(m.Dropped) != 0 {
				t.Errorf("backup holds %d blobs (dropped %v), want 3", m.Blobs, m.Dropped)
			}
			for _, b := range []uploaded{kept, gone, loose} {
				if _, err := os.Stat(filepath.Join(dest, config.BlobsDir, filepath.FromSlash(blob.RelPath(key(t, s.DID(), b))))); err != nil {
					t.Errorf("blob missing from the backup: %v", err)
				}
			}
			if _, err := Verify(context.Background(), dest, o.Keys, DirBlobs(filepath.Join(dest, config.BlobsDir))); err != nil {
				t.Errorf("the backup does not verify: %v", err)
			}
			// The hold is gone with the backup: now they are collected.
			if got := collect(t, s); got.Blobs != 2 {
				t.Errorf("after the backup a collection deleted %d blobs, want 2", got.Blobs)
			}

			// Without a hold, an unreferenced blob collected after the
			// snapshot is left out, index row included.
			loose2 := upload(t, s, 4)
			o = options(s)
			o.afterSnapshot = func() {
				exec(t, s.DataDir(), "DELETE FROM blob_holds")
				collect(t, s)
			}
			dest = filepath.Join(t.TempDir(), "dropped.tar.gz")
			m, err = Create(context.Background(), s.DataDir(), dest, o)
			if err != nil {
				t.Fatalf("backup: %v", err)
			}
			if want := key(t, s.DID(), loose2).String(); m.Blobs != 1 || len(m.Dropped) != 1 || m.Dropped[0] != want {
				t.Errorf("backup holds %d blobs, dropped %v; want 1, dropped %s", m.Blobs, m.Dropped, want)
			}
			restored := filepath.Join(t.TempDir(), "restored")
			if err := Unpack(dest, restored); err != nil {
				t.Fatal(err)
			}
			if _, err := Verify(context.Background(), restored, o.Keys, DirBlobs(filepath.Join(restored, config.BlobsDir))); err != nil {
				t.Errorf("the restored backup does not verify: %v", err)
			}

			// Without a hold, a blob the snapshot's records reference but
			// the store lost fails the backup, naming blob and record.
			again := upload(t, s, 5)
			againRec := withImage(t, s, again)
			o = options(s)
			o.afterSnapshot = func() {
				exec(t, s.DataDir(), "DELETE FROM blob_holds")
				deleteRecord(t, s, againRec)
				collect(t, s)
			}
			dest = filepath.Join(t.TempDir(), "failed")
			_, err = Create(context.Background(), s.DataDir(), dest, o)
			if err == nil || !strings.Contains(err.Error(), again.Ref.Link) || !strings.Contains(err.Error(), "app.bsky.feed.post/"+againRec) {
				t.Fatalf("backup that lost a referenced blob: %v", err)
			}
			if entries, _ := os.ReadDir(dest); len(entries) != 0 {
				t.Errorf("a failed backup left %d files", len(entries))
			}
		})
	}
}

// TestRestoreBlobsToS3 unpacks a backup and moves its blobs into an S3
// bucket, as pds restore does for a server configured with one.
func TestRestoreBlobsToS3(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t)
	b := upload(t, s, 7)
	withImage(t, s, b)
	o := options(s)
	dest := filepath.Join(t.TempDir(), "b.tar.gz")
	if _, err := Create(context.Background(), s.DataDir(), dest, o); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "restored")
	if err := Unpack(dest, dir); err != nil {
		t.Fatal(err)
	}
	var cfg config.Config
	s3Store(t, "restored")(&cfg)
	store, err := blob.NewS3(blob.S3Config{Endpoint: cfg.BlobS3Endpoint, Bucket: cfg.BlobS3Bucket, Region: cfg.BlobS3Region,
		AccessKeyID: cfg.BlobS3AccessKey, SecretAccessKey: cfg.BlobS3SecretKey, PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	// An empty bucket fails the check, naming the blob.
	if _, err := Verify(context.Background(), dir, o.Keys, store); err == nil || !strings.Contains(err.Error(), b.Ref.Link) {
		t.Fatalf("verify against an empty bucket: %v", err)
	}
	if n, err := MoveBlobs(context.Background(), filepath.Join(dir, config.BlobsDir), store); err != nil || n != 1 {
		t.Fatalf("move blobs: %d, %v", n, err)
	}
	if _, err := Verify(context.Background(), dir, o.Keys, store); err != nil {
		t.Fatalf("verify after moving the blobs: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, config.BlobsDir)); !os.IsNotExist(err) {
		t.Errorf("blobs directory left after the move: %v", err)
	}
}

// TestUnpackRefusesDamagedBlob: a blob file in a backup that does not hash
// to its name fails the restore.
func TestUnpackRefusesDamagedBlob(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t)
	b := upload(t, s, 9)
	withImage(t, s, b)
	dest := filepath.Join(t.TempDir(), "b")
	if _, err := Create(context.Background(), s.DataDir(), dest, options(s)); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dest, config.BlobsDir, filepath.FromSlash(blob.RelPath(key(t, s.DID(), b))))
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data[10] ^= 1
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	err = Unpack(dest, filepath.Join(t.TempDir(), "restored"))
	if err == nil || !strings.Contains(err.Error(), "do not hash") {
		t.Fatalf("unpack of a damaged blob: %v", err)
	}
}
