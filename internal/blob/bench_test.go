package blob_test

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"

	"stratus/internal/blob"
	"stratus/internal/sqlite"
)

const benchSize = 64 << 20

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func benchService(b *testing.B) *blob.Service {
	b.Helper()
	dir := b.TempDir()
	db, err := sqlite.Open(context.Background(), filepath.Join(dir, "pds.sqlite"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	d, err := blob.NewDisk(filepath.Join(dir, "blobs"))
	if err != nil {
		b.Fatal(err)
	}
	s, err := blob.NewService(blob.Config{Store: d, Index: db.Blobs()})
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// BenchmarkDiskUpload measures Upload into the disk store: hashing,
// writing and fsyncing a 64 MiB blob, then recording it.
func BenchmarkDiskUpload(b *testing.B) {
	s := benchService(b)
	b.SetBytes(benchSize)
	for i := 0; b.Loop(); i++ {
		// A distinct DID per round, so every round stores a new object.
		did := syntax.DID("did:plc:bench" + string(rune('a'+i%26)) + "aaaaaaaaaaaaaaaaaa")
		if _, err := s.Upload(context.Background(), did, io.LimitReader(zeros{}, benchSize), "", benchSize, time.Now()); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		s.Store().Delete(context.Background(), blob.Key{DID: did, CID: mustSum(b, benchSize)})
		b.StartTimer()
	}
}

// BenchmarkDiskDownload measures reading a 64 MiB blob back through Open.
func BenchmarkDiskDownload(b *testing.B) {
	s := benchService(b)
	did := syntax.DID("did:plc:benchaaaaaaaaaaaaaaaaaaa")
	m, err := s.Upload(context.Background(), did, io.LimitReader(zeros{}, benchSize), "", benchSize, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(benchSize)
	for b.Loop() {
		_, r, err := s.Open(context.Background(), blob.Key{DID: did, CID: m.CID})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, r); err != nil {
			b.Fatal(err)
		}
		r.Close()
	}
}

// BenchmarkRawDiskCopy is the baseline for the two above: the same bytes
// written to a file and fsynced, then read back, with no hashing or
// bookkeeping.
func BenchmarkRawDiskCopy(b *testing.B) {
	dir := b.TempDir()
	b.SetBytes(benchSize)
	for b.Loop() {
		f, err := os.Create(filepath.Join(dir, "raw"))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(f, io.LimitReader(zeros{}, benchSize)); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		f.Close()
		os.Remove(f.Name())
	}
}

func mustSum(b *testing.B, n int) cid.Cid {
	b.Helper()
	sum, err := blob.Prefix.Sum(make([]byte, n))
	if err != nil {
		b.Fatal(err)
	}
	return sum
}
