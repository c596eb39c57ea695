// Package repo is the write and read path of account repositories: it turns
// record writes into signed version-3 commits over indigo's Merkle Search
// Tree and exports the repository and record proofs as CAR files.
//
// Storage holds the signed commit, the record blocks and the record index.
// The MST nodes are not stored: the tree is a pure function of the record
// index, so it is rebuilt in memory when an account is first used and
// checked against the data root of the signed commit. Each commit then
// writes a handful of rows instead of every changed tree node, and a store
// can never hold a stale or unreachable node.
package repo

import (
	"context"
	"errors"
	"fmt"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"
	"stratus/internal/sequencer"
)

// ErrNoRepo is returned by a Store when the account has no repository yet.
var ErrNoRepo = errors.New("repository not found")

// ErrInactive is returned by Store.Apply when the batch requires an active
// account and the account is not active at commit time.
var ErrInactive = errors.New("account is not active")

// ErrHeadMoved is returned by Store.Apply when the stored head is not the
// batch's Prev: the batch was built on a commit that never landed.
var ErrHeadMoved = errors.New("repository head moved")

// ErrBlockNotFound is returned by a Store for a block it does not hold.
var ErrBlockNotFound = errors.New("block not found")

// Head is the current state of a repository: its signed commit, the MST
// root the commit points to, and the commit's revision.
type Head struct {
	Commit cid.Cid
	Data   cid.Cid
	Rev    syntax.TID
}

// Block is one content-addressed block.
type Block struct {
	CID  cid.Cid
	Data []byte
}

// IndexEntry is a row of the record index.
type IndexEntry struct {
	Collection syntax.NSID
	RKey       syntax.RecordKey
	CID        cid.Cid
	// Created is set on an Upsert of a path that held no record before
	// the commit: it has no blob references to drop, so the store skips
	// that step.
	Created bool
}

// Batch is everything one commit changes, applied by Store.Apply in a single
// transaction so that a crash leaves either all of it or none of it.
type Batch struct {
	DID syntax.DID
	// Prev is the head this batch was built on (nil for a genesis commit).
	// Stores refuse the batch if the stored head differs, which catches a
	// second writer that bypassed the per-account lock.
	Prev *Head
	Head Head
	Rev  syntax.TID
	// RequireActive makes the store refuse the batch with ErrInactive
	// unless the account is active inside the same transaction, so a
	// deactivation by another process can never race a write.
	RequireActive bool
	// Put are the new blocks: the commit and new records. The store keeps
	// the commit with the head, replacing the previous one.
	Put []Block
	// MaybeDrop are record blocks that lost a reference; each is deleted
	// only if no record in the index still points to it (two records with
	// identical content share one block).
	MaybeDrop []cid.Cid
	Upsert    []IndexEntry
	Delete    []IndexEntry
	Events    []sequencer.Event
	// Blobs are the blob references of the records the batch writes. The
	// store first drops the references of every record in Upsert (but
	// those Created) and Delete, then adds these, in the same transaction: a blob that loses
	// its last reference starts its unreferenced period, and a referenced
	// blob must be held with the referenced type and size, or the batch
	// fails with a *BlobRefError.
	Blobs []BlobRef
	// AllowMissingBlobs records references to blobs the server does not
	// hold instead of failing (repository import); they are listed by
	// com.atproto.repo.listMissingBlobs until uploaded.
	AllowMissingBlobs bool
}

// BlobRef is a record's reference to a blob.
type BlobRef struct {
	Collection syntax.NSID
	RKey       syntax.RecordKey
	CID        cid.Cid
	MimeType   string
	Size       int64
}

// BlobRefError is returned by Store.Apply for a reference to a blob that
// is not held (Held false) or whose type or size differ from the held
// blob's (MimeType and Size).
type BlobRefError struct {
	Ref      BlobRef
	Held     bool
	MimeType string
	Size     int64
}

// Error implements error.
func (e *BlobRefError) Error() string {
	if !e.Held {
		return "blob not found: " + e.Ref.CID.String()
	}
	return fmt.Sprintf("blob %s is %s of %d bytes, referenced as %s of %d bytes", e.Ref.CID, e.MimeType, e.Size, e.Ref.MimeType, e.Ref.Size)
}

// Record is a stored record read back from the index.
type Record struct {
	Collection syntax.NSID
	RKey       syntax.RecordKey
	CID        cid.Cid
	Data       []byte
}

// ListQuery selects a page of one collection's records.
type ListQuery struct {
	Collection syntax.NSID
	Limit      int
	// Cursor is the record key to continue after (exclusive); empty starts
	// at the beginning.
	Cursor string
	// Reverse lists oldest first (ascending record key); the default is
	// newest first, as the reference PDS does.
	Reverse bool
}

// Store is the storage the repository engine needs. Implementations must be
// safe for concurrent use.
type Store interface {
	// Head returns the current head of did's repository, or ErrNoRepo.
	Head(ctx context.Context, did syntax.DID) (Head, error)
	// Block returns one block of did's repository, or ErrBlockNotFound.
	Block(ctx context.Context, did syntax.DID, c cid.Cid) ([]byte, error)
	// Apply writes a commit batch atomically and returns the sequence
	// numbers assigned to its events.
	Apply(ctx context.Context, b *Batch) ([]int64, error)
	// ApplyGroup writes several batches in one transaction, each atomic
	// on its own: errs[i] is batch i's refusal (its changes rolled back,
	// the others kept), and seqs[i] its events' sequence numbers. Batches
	// are applied in order, so a batch built on a refused one fails with
	// ErrHeadMoved. A non-nil err means the transaction failed as a whole
	// and nothing was written.
	ApplyGroup(ctx context.Context, bs []*Batch) (seqs [][]int64, errs []error, err error)
	// Record returns one record from the index (ErrBlockNotFound if absent).
	Record(ctx context.Context, did syntax.DID, collection syntax.NSID, rkey syntax.RecordKey) (Record, error)
	// ListRecords returns a page of records in record-key order.
	ListRecords(ctx context.Context, did syntax.DID, q ListQuery) ([]Record, error)
	// Collections lists the collections that hold at least one record.
	Collections(ctx context.Context, did syntax.DID) ([]syntax.NSID, error)
	// Stats counts the stored blocks (commit and records) and the indexed
	// records of did's repository.
	Stats(ctx context.Context, did syntax.DID) (blocks, records int64, err error)
	// MissingBlocks returns the MST keys of (at most a few) indexed records
	// of did whose block is not stored.
	MissingBlocks(ctx context.Context, did syntax.DID) ([]string, error)
	// Keys calls fn for every record in the index with its MST key
	// ("collection/rkey") and CID.
	Keys(ctx context.Context, did syntax.DID, fn func(key string, c cid.Cid) error) error
	// Export calls head once, with the head and its commit block, and
	// then each for every stored record block written after rev since
	// (all when since is empty), all from one consistent read snapshot.
	Export(ctx context.Context, did syntax.DID, since string, head func(Head, Block) error, each func(Block) error) error
}
