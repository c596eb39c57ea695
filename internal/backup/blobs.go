package backup

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"

	"stratus/internal/blob"
	"stratus/internal/integrity"
	"stratus/internal/sqlite"
)

// renew keeps hold alive until the returned stop is called.
func renew(ctx context.Context, hold *sqlite.BlobHold) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(holdTTL / 3)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				// A failed renewal leaves the hold to expire; the copy
				// still refuses to lose a referenced blob.
				hold.Renew(ctx, holdTTL)
			}
		}
	}()
	return func() { cancel(); <-done }
}

// copiedBlobs reports what copyBlobs did.
type copiedBlobs struct {
	count   int
	bytes   int64
	dropped []string
}

// copyBlobs copies every blob the snapshot at db records from src into
// root (the disk store's layout), verifying each one's size and hash as it
// is written. A recorded blob the store no longer has is an error if a
// record in the snapshot references it; an unreferenced one was collected
// after the snapshot and is dropped from the snapshot's index instead, so
// the backup never records a blob it does not hold.
func copyBlobs(ctx context.Context, db string, src blob.Store, root string) (copiedBlobs, error) {
	var out copiedBlobs
	in, err := sqlite.Inspect(ctx, db, true)
	if err != nil {
		return out, err
	}
	committed := false
	defer func() {
		if !committed {
			in.Close()
		}
	}()
	accounts, err := in.Accounts(ctx)
	if err != nil {
		return out, fmt.Errorf("read the snapshot's accounts: %w", err)
	}
	for _, a := range accounts {
		refs := map[string]string{} // cid -> one record referencing it
		if err := in.EachBlobRef(ctx, a.DID, func(coll, rkey, c string) error {
			if _, ok := refs[c]; !ok {
				refs[c] = coll + "/" + rkey
			}
			return nil
		}); err != nil {
			return out, fmt.Errorf("read the snapshot's blob references: %w", err)
		}
		var rows []integrity.BlobRow
		if err := in.EachBlobRow(ctx, a.DID, func(r integrity.BlobRow) error {
			rows = append(rows, r)
			return nil
		}); err != nil {
			return out, fmt.Errorf("read the snapshot's blobs: %w", err)
		}
		for _, r := range rows {
			c, err := cid.Decode(r.CID)
			if err != nil {
				return out, fmt.Errorf("blob index row with invalid CID %q", r.CID)
			}
			key := blob.Key{DID: syntax.DID(a.DID), CID: c}
			err = copyBlob(ctx, src, key, r.Size, filepath.Join(root, filepath.FromSlash(blob.RelPath(key))))
			if errors.Is(err, blob.ErrNotFound) {
				if rec, ok := refs[r.CID]; ok {
					return out, fmt.Errorf("blob %s of %s, referenced by record %s, is missing from the blob store (lost, or collected while the backup ran without a hold): run pds check", r.CID, a.DID, rec)
				}
				if err := in.DeleteBlobRow(ctx, a.DID, r.CID); err != nil {
					return out, err
				}
				out.dropped = append(out.dropped, key.String())
				continue
			}
			if err != nil {
				return out, err
			}
			out.count++
			out.bytes += r.Size
		}
	}
	committed = true
	if err := in.Commit(); err != nil {
		return out, fmt.Errorf("update the snapshot's blob index: %w", err)
	}
	sort.Strings(out.dropped)
	return out, nil
}

// copyBlob copies one blob from src to the new file dst, checking its
// size and hash.
func copyBlob(ctx context.Context, src blob.Store, key blob.Key, size int64, dst string) error {
	rc, err := src.Get(ctx, key, 0, -1)
	if err != nil {
		return err
	}
	defer rc.Close()
	return writeBlob(rc, key, size, dst)
}

// writeBlob writes the blob key read from r to the new file dst (mode
// 0600, fsynced), failing without leaving the file unless it has exactly
// size bytes hashing to the key's CID.
func writeBlob(r io.Reader, key blob.Key, size int64, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return err
	}
	v, err := newVerifier(r, key, size)
	if err != nil {
		return err
	}
	if err := writeFrom(dst, v, 0o600); err != nil {
		os.Remove(dst)
		return err
	}
	return nil
}

// verifier passes a blob's bytes through and, at the end, fails the read
// unless there were size of them and they hash to the CID.
type verifier struct {
	r    io.Reader
	key  blob.Key
	size int64
	n    int64
	h    hash.Hash
	want []byte
}

func newVerifier(r io.Reader, key blob.Key, size int64) (*verifier, error) {
	dec, err := multihash.Decode(key.CID.Hash())
	if err != nil || dec.Code != multihash.SHA2_256 {
		return nil, fmt.Errorf("blob %s: unsupported CID", key)
	}
	return &verifier{r: io.LimitReader(r, size+1), key: key, size: size, h: sha256.New(), want: dec.Digest}, nil
}

func (v *verifier) Read(p []byte) (int, error) {
	n, err := v.r.Read(p)
	v.n += int64(n)
	v.h.Write(p[:n])
	if errors.Is(err, io.EOF) {
		switch {
		case v.n != v.size:
			return n, fmt.Errorf("blob %s is damaged: %d bytes, %d recorded", v.key, v.n, v.size)
		case string(v.h.Sum(nil)) != string(v.want):
			return n, fmt.Errorf("blob %s is damaged: its bytes do not hash to its CID", v.key)
		}
	}
	return n, err
}

// DirBlobs reads blobs laid out as a disk store under root (a backup's
// blobs directory) without creating anything there.
func DirBlobs(root string) integrity.BlobStore { return dirBlobs(root) }

type dirBlobs string

func (d dirBlobs) path(k blob.Key) string {
	return filepath.Join(string(d), filepath.FromSlash(blob.RelPath(k)))
}

func (d dirBlobs) Stat(_ context.Context, k blob.Key) (int64, error) {
	fi, err := os.Stat(d.path(k))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, blob.ErrNotFound
	}
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

func (d dirBlobs) Get(_ context.Context, k blob.Key, offset, length int64) (io.ReadCloser, error) {
	f, err := os.Open(d.path(k))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, blob.ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	if offset > 0 {
		if _, err := f.Seek(offset, io.SeekStart); err != nil {
			f.Close()
			return nil, err
		}
	}
	if length >= 0 {
		return struct {
			io.Reader
			io.Closer
		}{io.LimitReader(f, length), f}, nil
	}
	return f, nil
}

// eachBlobFile calls fn for every blob file under root (a disk store's
// layout), skipping names a disk store could not have written.
func eachBlobFile(root string, fn func(key blob.Key, path string, size int64) error) error {
	return filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && path == root {
				return filepath.SkipAll
			}
			return err
		}
		if !e.Type().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		key, err := blob.ParseRelPath(filepath.ToSlash(rel))
		if err != nil {
			return nil
		}
		info, err := e.Info()
		if err != nil {
			return err
		}
		return fn(key, path, info.Size())
	})
}

// copyBlobDir copies the blob files of a backup directory's blobs/ into
// dst, verifying each against its CID.
func copyBlobDir(src, dst string) error {
	return eachBlobFile(src, func(key blob.Key, path string, size int64) error {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		return writeBlob(f, key, size, filepath.Join(dst, filepath.FromSlash(blob.RelPath(key))))
	})
}

// MoveBlobs puts the blobs that a restore unpacked into root (the data
// directory's blobs/) into store (the configured S3 store, say),
// verifying each as it is read, and removes root afterwards. It returns how
// many blobs it moved.
func MoveBlobs(ctx context.Context, root string, store blob.Store) (int, error) {
	n := 0
	err := eachBlobFile(root, func(key blob.Key, path string, size int64) error {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		// Verify first: a store may stop reading at size bytes.
		v, err := newVerifier(f, key, size)
		if err != nil {
			return err
		}
		if _, err := io.Copy(io.Discard, v); err != nil {
			return err
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return err
		}
		if err := store.Put(ctx, key, f, size); err != nil {
			return fmt.Errorf("put blob %s: %w", key, err)
		}
		n++
		return nil
	})
	if err != nil {
		return n, err
	}
	return n, os.RemoveAll(root)
}
