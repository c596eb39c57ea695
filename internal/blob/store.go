// Package blob stores and serves the media files (blobs) that records
// reference: streaming uploads into a content-addressed store, MIME
// decisions that keep uploaded files from running as active content in the
// server's origin, ranged reads, and the garbage collection of blobs no
// record references.
//
// Bytes live in a Store (the local disk or an S3-compatible service);
// which blobs exist and which records reference them live in an Index
// (SQLite). The index is the truth: a stored object without an index row
// is garbage that the collector sweeps, and the collector deletes index
// rows before objects, so a crash can leave only that harmless kind of
// garbage.
package blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
)

// ErrNotFound is returned by a Store or an Index for a blob it does not
// hold.
var ErrNotFound = errors.New("blob not found")

// Key names one stored blob: blobs belong to an account, as in the
// reference PDS, so that accounts never share or delete each other's
// files.
type Key struct {
	DID syntax.DID
	CID cid.Cid
}

// String returns the object name used by the S3 store, "<did>/<cid>".
func (k Key) String() string { return k.DID.String() + "/" + k.CID.String() }

// ParseKey parses the "<did>/<cid>" form of a key.
func ParseKey(s string) (Key, error) {
	d, c, ok := strings.Cut(s, "/")
	if !ok {
		return Key{}, fmt.Errorf("blob key %q: want <did>/<cid>", s)
	}
	did, err := syntax.ParseDID(d)
	if err != nil {
		return Key{}, fmt.Errorf("blob key %q: %w", s, err)
	}
	cc, err := cid.Decode(c)
	if err != nil {
		return Key{}, fmt.Errorf("blob key %q: %w", s, err)
	}
	return Key{DID: did, CID: cc}, nil
}

// Prefix is the CID prefix of every blob: CIDv1, raw codec, sha2-256
// ("bafkrei...").
var Prefix = cid.NewPrefixV1(cid.Raw, multihash.SHA2_256)

// Store holds blob bytes. Content is verified by the caller before Put, so
// a Store never hashes; Put of a key that already exists may keep the
// existing object, since equal keys mean equal bytes. Implementations are
// safe for concurrent use.
type Store interface {
	// Put stores size bytes read from r under key.
	Put(ctx context.Context, key Key, r io.Reader, size int64) error
	// Get returns length bytes of the blob starting at offset (length < 0
	// reads to the end), or ErrNotFound.
	Get(ctx context.Context, key Key, offset, length int64) (io.ReadCloser, error)
	// Stat returns the size of a stored blob, or ErrNotFound.
	Stat(ctx context.Context, key Key) (int64, error)
	// Delete removes a blob; deleting a missing blob is not an error.
	Delete(ctx context.Context, key Key) error
	// List calls fn for every stored blob, in no particular order. Objects
	// whose names are not blob keys are skipped.
	List(ctx context.Context, fn func(key Key, size int64) error) error
}

// FileMover is implemented by stores that can take a complete local file
// by renaming it instead of copying its bytes.
type FileMover interface {
	// TempDir is a directory on the store's filesystem where files handed
	// to PutFile should be written.
	TempDir() string
	// PutFile moves the file at path into the store under key; the file is
	// gone afterwards whether or not the key already existed.
	PutFile(ctx context.Context, key Key, path string) error
}
