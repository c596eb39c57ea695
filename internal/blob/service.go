package blob

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"

	"stratus/internal/pdserr"
)

// Defaults of the configurable limits.
const (
	// DefaultMaxSize is the largest blob accepted: 100 MiB.
	DefaultMaxSize = 100 << 20
	// DefaultTTL is how long a blob referenced by no record is kept: as
	// the reference PDS keeps unreferenced uploads for an hour.
	DefaultTTL = time.Hour
)

// copyBufferSize is the buffer of an upload's copy to its temporary file.
const copyBufferSize = 256 << 10

// tempFileAge is how old an upload's temporary file must be before the
// collector removes it: far longer than any upload takes, so only files
// left by a crash qualify.
const tempFileAge = 24 * time.Hour

// Meta describes a recorded blob.
type Meta struct {
	CID      cid.Cid
	MimeType string
	Size     int64
}

// Missing is a blob that a record references but the server does not hold
// (after a repository import).
type Missing struct {
	CID       cid.Cid
	RecordURI syntax.ATURI
}

// Stats are the numbers of the blob index, for status reports.
type Stats struct {
	// Blobs and Bytes count the blobs held, referenced or not.
	Blobs int64
	Bytes int64
	// Unreferenced counts held blobs no record references (they are
	// collected after the TTL).
	Unreferenced int64
	// Missing counts distinct blobs that records reference but the server
	// does not hold.
	Missing int64
}

// Index records which blobs exist and which records reference them.
// internal/sqlite implements it; the references themselves are written by
// the repository's commit transaction.
type Index interface {
	// Add records an uploaded blob as unreferenced since now, or, if key is
	// already recorded, restarts its unreferenced period (when it has no
	// references) and returns the recorded metadata.
	Add(ctx context.Context, did syntax.DID, m Meta, now time.Time) (Meta, error)
	// Get returns a recorded blob, or ErrNotFound.
	Get(ctx context.Context, key Key) (Meta, error)
	// Has reports whether key is recorded.
	Has(ctx context.Context, key Key) (bool, error)
	// Collectable returns up to limit recorded blobs that no record has
	// referenced since before.
	Collectable(ctx context.Context, before time.Time, limit int) ([]Key, error)
	// Forget deletes the record of key if, inside the same transaction, it
	// still has no reference and has had none since before. It reports
	// whether it deleted anything.
	Forget(ctx context.Context, key Key, before time.Time) (bool, error)
	// ListReferenced returns, in CID string order after cursor, up to limit
	// held blobs of did referenced by records written after rev since
	// (all records when since is empty).
	ListReferenced(ctx context.Context, did syntax.DID, since, cursor string, limit int) ([]cid.Cid, error)
	// ListMissing returns, in CID string order after cursor, up to limit
	// blobs of did that records reference but that are not held.
	ListMissing(ctx context.Context, did syntax.DID, cursor string, limit int) ([]Missing, error)
	// Stats counts the index.
	Stats(ctx context.Context) (Stats, error)
	// Each calls fn for every recorded blob.
	Each(ctx context.Context, fn func(Key, Meta) error) error
	// EachReferenced calls fn once for every distinct blob that a record
	// references, with whether the blob is recorded as held.
	EachReferenced(ctx context.Context, fn func(key Key, held bool) error) error
}

// Config holds a Service's dependencies and limits.
type Config struct {
	Store Store
	Index Index
	// TempDir receives uploads in progress when Store is not a FileMover.
	TempDir string
	// MaxSize is the largest blob accepted (DefaultMaxSize when 0).
	MaxSize int64
	// TTL is how long a blob stays after it was uploaded or lost its last
	// reference, while no record references it (DefaultTTL when 0).
	TTL time.Duration
	Log *slog.Logger
}

// Service uploads, serves and collects blobs.
type Service struct {
	store   Store
	index   Index
	tempDir string
	mover   FileMover
	maxSize int64
	ttl     time.Duration
	log     *slog.Logger

	// locks serialise, per key, an upload's store write and index insert
	// against the collector's index delete and store delete, so that
	// neither can interleave into a row without an object.
	seed  maphash.Seed
	locks [64]sync.Mutex

	// orphans are store objects without an index row seen by the last
	// sweep and when; one is deleted when a later sweep, at least a TTL
	// later, still finds it orphaned.
	orphanMu sync.Mutex
	orphans  map[Key]time.Time
}

// NewService returns a Service. It creates the temporary directory.
func NewService(cfg Config) (*Service, error) {
	s := &Service{store: cfg.Store, index: cfg.Index, tempDir: cfg.TempDir, maxSize: cfg.MaxSize, ttl: cfg.TTL,
		log: cfg.Log, seed: maphash.MakeSeed(), orphans: map[Key]time.Time{}}
	if s.maxSize <= 0 {
		s.maxSize = DefaultMaxSize
	}
	if s.ttl <= 0 {
		s.ttl = DefaultTTL
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if m, ok := cfg.Store.(FileMover); ok {
		s.mover = m
		s.tempDir = m.TempDir()
	}
	if s.tempDir == "" {
		return nil, errors.New("blob service: a temporary directory is required")
	}
	if err := os.MkdirAll(s.tempDir, 0o700); err != nil {
		return nil, fmt.Errorf("create blob temp dir: %w", err)
	}
	return s, nil
}

// MaxSize returns the largest blob accepted.
func (s *Service) MaxSize() int64 { return s.maxSize }

// Store returns the blob store, for integrity checks and backups.
func (s *Service) Store() Store { return s.store }

// Index returns the blob index, for integrity checks and backups.
func (s *Service) Index() Index { return s.index }

func (s *Service) lock(k Key) *sync.Mutex {
	h := maphash.String(s.seed, k.String())
	m := &s.locks[h%uint64(len(s.locks))]
	m.Lock()
	return m
}

// TooLarge returns the error for a blob over the limit.
func (s *Service) TooLarge() error {
	return pdserr.New(pdserr.BlobTooLarge, "Blob is larger than the maximum of %d bytes (%s)", s.maxSize, humanBytes(s.maxSize))
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}

// Upload streams body into the store as a blob of did and records it. The
// body is written to a temporary file while it is hashed, never held in
// memory; reading stops one byte past the limit. declared is the request's
// Content-Type and length its Content-Length (-1 when unknown), which is
// refused early when over the limit. Uploading the same bytes again
// returns the blob already recorded.
func (s *Service) Upload(ctx context.Context, did syntax.DID, body io.Reader, declared string, length int64, now time.Time) (Meta, error) {
	if length > s.maxSize {
		return Meta{}, s.TooLarge()
	}
	f, err := os.CreateTemp(s.tempDir, "upload-*")
	if err != nil {
		return Meta{}, fmt.Errorf("create upload file: %w", err)
	}
	tmp := f.Name()
	defer func() {
		f.Close()
		os.Remove(tmp) // already moved on success
	}()

	h := sha256.New()
	head := &headWriter{max: SniffLen}
	// A larger buffer than io.Copy's 32 KiB means fewer write calls; it is
	// the only memory an upload holds, whatever the blob's size.
	buf := make([]byte, copyBufferSize)
	n, err := io.CopyBuffer(io.MultiWriter(fileWriter{f}, h, head), io.LimitReader(body, s.maxSize+1), buf)
	if err != nil {
		if isWriteError(err) {
			return Meta{}, fmt.Errorf("write upload file: %w", err)
		}
		return Meta{}, pdserr.Wrap(err, pdserr.InvalidRequest, "Could not read the uploaded body")
	}
	if n > s.maxSize {
		return Meta{}, s.TooLarge()
	}
	mh, err := multihash.Encode(h.Sum(nil), multihash.SHA2_256)
	if err != nil {
		return Meta{}, fmt.Errorf("hash blob: %w", err)
	}
	m := Meta{CID: cid.NewCidV1(cid.Raw, mh), MimeType: ContentType(declared, head.buf), Size: n}
	key := Key{DID: did, CID: m.CID}

	mu := s.lock(key)
	defer mu.Unlock()
	if s.mover != nil {
		if err := f.Close(); err != nil {
			return Meta{}, fmt.Errorf("write upload file: %w", err)
		}
		if err := s.mover.PutFile(ctx, key, tmp); err != nil {
			return Meta{}, err
		}
	} else {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return Meta{}, fmt.Errorf("rewind upload file: %w", err)
		}
		if err := s.store.Put(ctx, key, f, n); err != nil {
			return Meta{}, err
		}
	}
	got, err := s.index.Add(ctx, did, m, now)
	if err != nil {
		return Meta{}, err
	}
	return got, nil
}

// fileWriter marks the errors of writes to the upload file.
type fileWriter struct{ f *os.File }

func (w fileWriter) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	if err != nil {
		err = writeErr{err}
	}
	return n, err
}

// writeErr marks failures of the upload's local writes, to tell them from
// failures to read the client's body.
type writeErr struct{ error }

func (e writeErr) Unwrap() error { return e.error }

func isWriteError(err error) bool {
	var w writeErr
	return errors.As(err, &w)
}

// headWriter keeps the first max bytes written to it.
type headWriter struct {
	max int
	buf []byte
}

func (w *headWriter) Write(p []byte) (int, error) {
	if room := w.max - len(w.buf); room > 0 {
		if len(p) < room {
			room = len(p)
		}
		w.buf = append(w.buf, p[:room]...)
	}
	return len(p), nil
}

// Open returns a recorded blob's metadata and a reader of its bytes that
// supports seeking (for ranged reads); the caller closes it. A blob that is
// not recorded is a BlobNotFound error.
func (s *Service) Open(ctx context.Context, key Key) (Meta, *Reader, error) {
	m, err := s.index.Get(ctx, key)
	if errors.Is(err, ErrNotFound) {
		return Meta{}, nil, pdserr.Wrap(err, pdserr.BlobNotFound, "Blob not found")
	}
	if err != nil {
		return Meta{}, nil, err
	}
	// Open the object now so a missing one is an error before any byte of
	// the answer is sent.
	rc, err := s.store.Get(ctx, key, 0, -1)
	if errors.Is(err, ErrNotFound) {
		s.log.ErrorContext(ctx, "blob recorded but missing from the store", "did", key.DID, "cid", key.CID)
		return Meta{}, nil, pdserr.Wrap(err, pdserr.BlobNotFound, "Blob not found")
	}
	if err != nil {
		return Meta{}, nil, err
	}
	// A local file of the wrong size is damaged: refuse it whole rather
	// than send a Content-Length the body cannot fill.
	if f, ok := rc.(interface{ Stat() (os.FileInfo, error) }); ok {
		if fi, err := f.Stat(); err == nil && fi.Size() != m.Size {
			rc.Close()
			s.log.ErrorContext(ctx, "stored blob has the wrong size; run pds check", "did", key.DID, "cid", key.CID, "size", fi.Size(), "want", m.Size)
			return Meta{}, nil, fmt.Errorf("blob %s is damaged: %d bytes stored, %d recorded", key, fi.Size(), m.Size)
		}
	}
	return m, &Reader{ctx: ctx, store: s.store, key: key, size: m.Size, rc: rc}, nil
}

// Reader reads a stored blob as an io.ReadSeeker: seeking is free, and the
// next read after a seek opens a ranged read at the new position, so
// http.ServeContent can answer Range requests from any store.
type Reader struct {
	ctx   context.Context
	store Store
	key   Key
	size  int64
	pos   int64 // logical position
	rc    io.ReadCloser
	rcPos int64 // position of rc
}

// Read implements io.Reader.
func (r *Reader) Read(p []byte) (int, error) {
	if r.rc != nil && r.rcPos != r.pos {
		r.rc.Close()
		r.rc = nil
	}
	if r.pos >= r.size {
		return 0, io.EOF
	}
	if r.rc == nil {
		rc, err := r.store.Get(r.ctx, r.key, r.pos, -1)
		if err != nil {
			return 0, err
		}
		r.rc, r.rcPos = rc, r.pos
	}
	n, err := r.rc.Read(p)
	r.pos += int64(n)
	r.rcPos += int64(n)
	return n, err
}

// Seek implements io.Seeker.
func (r *Reader) Seek(offset int64, whence int) (int64, error) {
	var abs int64
	switch whence {
	case io.SeekStart:
		abs = offset
	case io.SeekCurrent:
		abs = r.pos + offset
	case io.SeekEnd:
		abs = r.size + offset
	default:
		return 0, errors.New("blob reader: invalid whence")
	}
	if abs < 0 {
		return 0, errors.New("blob reader: negative position")
	}
	r.pos = abs
	return abs, nil
}

// Close releases the open read, if any.
func (r *Reader) Close() error {
	if r.rc != nil {
		err := r.rc.Close()
		r.rc = nil
		return err
	}
	return nil
}

// ListBlobs returns a page of the held blobs of did that records
// reference (com.atproto.sync.listBlobs).
func (s *Service) ListBlobs(ctx context.Context, did syntax.DID, since, cursor string, limit int) ([]cid.Cid, error) {
	return s.index.ListReferenced(ctx, did, since, cursor, limit)
}

// ListMissing returns a page of the blobs of did that records reference
// but the server does not hold (com.atproto.repo.listMissingBlobs).
func (s *Service) ListMissing(ctx context.Context, did syntax.DID, cursor string, limit int) ([]Missing, error) {
	return s.index.ListMissing(ctx, did, cursor, limit)
}

// Stats counts the held blobs and their bytes.
func (s *Service) Stats(ctx context.Context) (Stats, error) { return s.index.Stats(ctx) }

// Collected reports what one collection did.
type Collected struct {
	// Blobs and Bytes count the unreferenced blobs deleted.
	Blobs int
	// Orphans counts store objects without an index row deleted.
	Orphans int
	// TempFiles counts abandoned upload files removed.
	TempFiles int
}

// collectBatch is how many blobs one index query of the collector returns.
const collectBatch = 256

// Collect deletes the blobs that no record has referenced for the TTL
// before now, store objects that have had no index row for as long, and
// abandoned upload files. Each blob is forgotten by the index first, in a
// transaction that re-checks it is still unreferenced (so a commit that
// references it either lands first and keeps it, or finds it gone and
// fails with BlobNotFound), and only then deleted from the store: a crash
// in between leaves an object without a row, which a later collection
// sweeps. Collection never holds the write transaction for more than one
// blob, so writes are never blocked for long.
func (s *Service) Collect(ctx context.Context, now time.Time) (Collected, error) {
	var out Collected
	before := now.Add(-s.ttl)
	for {
		keys, err := s.index.Collectable(ctx, before, collectBatch)
		if err != nil {
			return out, err
		}
		for _, k := range keys {
			deleted, err := s.collectOne(ctx, k, before)
			if err != nil {
				return out, err
			}
			if deleted {
				out.Blobs++
			}
		}
		if len(keys) < collectBatch {
			break
		}
	}
	n, err := s.sweep(ctx, now)
	out.Orphans = n
	if err != nil {
		return out, err
	}
	out.TempFiles = s.removeTempFiles(time.Now().Add(-tempFileAge))
	return out, nil
}

func (s *Service) collectOne(ctx context.Context, k Key, before time.Time) (bool, error) {
	mu := s.lock(k)
	defer mu.Unlock()
	ok, err := s.index.Forget(ctx, k, before)
	if err != nil || !ok {
		return false, err
	}
	if err := s.store.Delete(ctx, k); err != nil {
		// The row is gone; the object is now an orphan for the sweep.
		s.log.WarnContext(ctx, "delete collected blob", "did", k.DID, "cid", k.CID, "err", err)
	}
	return true, nil
}

// sweep deletes store objects that have had no index row since a sweep at
// least a TTL ago. The delay protects objects another process is about to
// record (a restore, say); this process records its own under the key lock.
func (s *Service) sweep(ctx context.Context, now time.Time) (int, error) {
	seen := map[Key]bool{}
	deleted := 0
	err := s.store.List(ctx, func(k Key, _ int64) error {
		has, err := s.index.Has(ctx, k)
		if err != nil || has {
			return err
		}
		seen[k] = true
		s.orphanMu.Lock()
		first, known := s.orphans[k]
		if !known {
			s.orphans[k] = now
		}
		s.orphanMu.Unlock()
		if !known || now.Sub(first) < s.ttl {
			return nil
		}
		mu := s.lock(k)
		defer mu.Unlock()
		if has, err := s.index.Has(ctx, k); err != nil || has {
			return err
		}
		if err := s.store.Delete(ctx, k); err != nil {
			return err
		}
		deleted++
		s.orphanMu.Lock()
		delete(s.orphans, k)
		s.orphanMu.Unlock()
		return nil
	})
	s.orphanMu.Lock()
	for k := range s.orphans {
		if !seen[k] {
			delete(s.orphans, k)
		}
	}
	s.orphanMu.Unlock()
	return deleted, err
}

// removeTempFiles removes upload files last written before cutoff, left by
// a crash mid-upload.
func (s *Service) removeTempFiles(cutoff time.Time) int {
	entries, err := os.ReadDir(s.tempDir)
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "upload-") && !strings.HasPrefix(e.Name(), "put-") {
			continue
		}
		info, err := e.Info()
		if err != nil || info.ModTime().After(cutoff) {
			continue
		}
		if os.Remove(filepath.Join(s.tempDir, e.Name())) == nil {
			n++
		}
	}
	return n
}

// Problems are what Check found.
type Problems struct {
	// Lost are recorded blobs the store does not have.
	Lost []Key
	// WrongSize are recorded blobs whose stored size differs.
	WrongSize []Key
	// Orphans are store objects without an index row.
	Orphans []Key
	// Missing are referenced blobs never received (after an import).
	Missing []Key
}

// Check compares the index with the store: every recorded blob must be
// stored with its size. It reads the whole store listing and index, and
// does not modify anything.
func (s *Service) Check(ctx context.Context) (Problems, error) {
	var p Problems
	stored := map[Key]int64{}
	if err := s.store.List(ctx, func(k Key, size int64) error {
		stored[k] = size
		return nil
	}); err != nil {
		return p, err
	}
	if err := s.index.Each(ctx, func(k Key, m Meta) error {
		size, ok := stored[k]
		switch {
		case !ok:
			p.Lost = append(p.Lost, k)
		case size != m.Size:
			p.WrongSize = append(p.WrongSize, k)
		}
		delete(stored, k)
		return nil
	}); err != nil {
		return p, err
	}
	for k := range stored {
		p.Orphans = append(p.Orphans, k)
	}
	err := s.index.EachReferenced(ctx, func(k Key, held bool) error {
		if !held {
			p.Missing = append(p.Missing, k)
		}
		return nil
	})
	return p, err
}
