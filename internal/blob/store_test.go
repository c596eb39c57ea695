package blob_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"stratus/internal/blob"
)

// stores returns one fresh instance of every Store implementation, so that
// each test runs against all of them.
func stores(t *testing.T) map[string]blob.Store {
	t.Helper()
	d, err := blob.NewDisk(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return map[string]blob.Store{"disk": d, "s3": newS3(t)}
}

// newS3 returns an S3 store backed by an in-process S3 server.
func newS3(t *testing.T) *blob.S3 {
	t.Helper()
	backend := s3mem.New()
	if err := backend.CreateBucket("blobs"); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(gofakes3.New(backend).Server())
	// gofakes3 writes a header twice on some errors; net/http's complaint
	// about it is noise.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.Start()
	t.Cleanup(srv.Close)
	s, err := blob.NewS3(blob.S3Config{Endpoint: srv.URL, Bucket: "blobs", Region: "us-east-1",
		AccessKeyID: "test", SecretAccessKey: "test", PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func keyOf(t testing.TB, did string, data []byte) blob.Key {
	t.Helper()
	c, err := blob.Prefix.Sum(data)
	if err != nil {
		t.Fatal(err)
	}
	return blob.Key{DID: syntax.DID(did), CID: c}
}

func read(t *testing.T, s blob.Store, k blob.Key, off, n int64) []byte {
	t.Helper()
	rc, err := s.Get(context.Background(), k, off, n)
	if err != nil {
		t.Fatalf("Get(%d, %d): %v", off, n, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return b
}

func TestStores(t *testing.T) {
	ctx := context.Background()
	data := bytes.Repeat([]byte("0123456789"), 1000)
	for name, s := range stores(t) {
		t.Run(name, func(t *testing.T) {
			k := keyOf(t, "did:plc:abcdefghijklmnopqrstuvwx", data)
			other := keyOf(t, "did:web:pds.test%3A8080", []byte("other"))

			if _, err := s.Stat(ctx, k); !errors.Is(err, blob.ErrNotFound) {
				t.Fatalf("Stat of a missing blob: %v, want ErrNotFound", err)
			}
			if _, err := s.Get(ctx, k, 0, -1); !errors.Is(err, blob.ErrNotFound) {
				t.Fatalf("Get of a missing blob: %v, want ErrNotFound", err)
			}
			if err := s.Delete(ctx, k); err != nil {
				t.Fatalf("Delete of a missing blob: %v", err)
			}
			if err := s.Put(ctx, k, bytes.NewReader(data), int64(len(data))); err != nil {
				t.Fatal(err)
			}
			// Idempotent: the same key again is fine.
			if err := s.Put(ctx, k, bytes.NewReader(data), int64(len(data))); err != nil {
				t.Fatalf("second Put: %v", err)
			}
			if err := s.Put(ctx, other, bytes.NewReader([]byte("other")), 5); err != nil {
				t.Fatal(err)
			}
			if n, err := s.Stat(ctx, k); err != nil || n != int64(len(data)) {
				t.Fatalf("Stat = %d, %v; want %d", n, err, len(data))
			}
			for _, tc := range []struct {
				off, n int64
				want   []byte
			}{
				{0, -1, data},
				{0, 10, data[:10]},
				{5, 3, data[5:8]},
				{9990, -1, data[9990:]},
				{9995, 5, data[9995:]},
			} {
				if got := read(t, s, k, tc.off, tc.n); !bytes.Equal(got, tc.want) {
					t.Errorf("Get(%d, %d) = %d bytes, want %d", tc.off, tc.n, len(got), len(tc.want))
				}
			}
			var listed []string
			if err := s.List(ctx, func(k blob.Key, size int64) error {
				listed = append(listed, k.String())
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			sort.Strings(listed)
			want := []string{k.String(), other.String()}
			sort.Strings(want)
			if len(listed) != 2 || listed[0] != want[0] || listed[1] != want[1] {
				t.Fatalf("List = %v, want %v", listed, want)
			}
			if err := s.Delete(ctx, k); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Stat(ctx, k); !errors.Is(err, blob.ErrNotFound) {
				t.Fatalf("Stat after Delete: %v, want ErrNotFound", err)
			}
			if got := read(t, s, other, 0, -1); string(got) != "other" {
				t.Fatalf("other blob = %q", got)
			}
		})
	}
}

func TestDiskPutFile(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	d, err := blob.NewDisk(root)
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("moved, not copied")
	k := keyOf(t, "did:plc:abcdefghijklmnopqrstuvwx", data)
	for i := range 2 {
		tmp := filepath.Join(d.TempDir(), "upload-test")
		if err := os.WriteFile(tmp, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := d.PutFile(ctx, k, tmp); err != nil {
			t.Fatalf("PutFile #%d: %v", i, err)
		}
		if _, err := os.Stat(tmp); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("PutFile #%d left the temporary file: %v", i, err)
		}
	}
	if got := read(t, d, k, 0, -1); !bytes.Equal(got, data) {
		t.Fatalf("read back %q", got)
	}
	// Objects live at <root>/<did with colons as underscores>/<cid>.
	if _, err := os.Stat(filepath.Join(root, "did_plc_abcdefghijklmnopqrstuvwx", k.CID.String())); err != nil {
		t.Fatalf("object path: %v", err)
	}
}

func TestParseKey(t *testing.T) {
	c, _ := blob.Prefix.Sum([]byte("x"))
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"did:plc:abcdefghijklmnopqrstuvwx/" + c.String(), true},
		{"did:web:pds.test%3A8080/" + c.String(), true},
		{"did:plc:abc", false},
		{"notadid/" + c.String(), false},
		{"did:plc:abc/notacid", false},
		{"/" + c.String(), false},
	} {
		k, err := blob.ParseKey(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("ParseKey(%q) error = %v, want ok=%v", tc.in, err, tc.ok)
		}
		if err == nil && k.String() != tc.in {
			t.Errorf("ParseKey(%q).String() = %q", tc.in, k.String())
		}
		if err == nil && !k.CID.Equals(c) {
			t.Errorf("ParseKey(%q).CID = %s", tc.in, k.CID)
		}
	}
}
