package integrity

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"

	"stratus/internal/blob"
)

// BlobRow is a blob recorded as held.
type BlobRow struct {
	CID      string
	MimeType string
	Size     int64
	// Marked is set while the row says records reference the blob (no
	// unreferenced period is running, so the collector keeps it).
	Marked bool
}

// BlobStore is where blob bytes are read from; blob.Store implements it.
type BlobStore interface {
	Stat(ctx context.Context, key blob.Key) (int64, error)
	Get(ctx context.Context, key blob.Key, offset, length int64) (io.ReadCloser, error)
}

// blobUse is one record's reference to a blob, as the record says it.
type blobUse struct {
	mimeType string
	size     int64
}

// blobState is what checking one account's blobs learned, which repair
// reuses.
type blobState struct {
	// want: blob CID -> record path -> the reference, from the records.
	want map[string]map[string]blobUse
	// have: the reference index rows, "path cid".
	have map[string]bool
	rows map[string]BlobRow
	// complete: every indexed record was read, so want is the whole truth.
	complete bool
}

func refKey(path, c string) string { return path + " " + c }

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// readBlobState gathers what the records reference and what the blob
// tables hold for s's account.
func readBlobState(ctx context.Context, st Store, s *repoState, r *Report) *blobState {
	did := s.did
	b := &blobState{want: map[string]map[string]blobUse{}, have: map[string]bool{}, rows: map[string]BlobRow{}, complete: true}
	for key := range s.index {
		if _, ok := s.refs[key]; !ok {
			b.complete = false
		}
	}
	for _, key := range s.badRows {
		if _, ok := s.refs[key]; !ok {
			b.complete = false
		}
	}
	for path, refs := range s.refs {
		for _, ref := range refs {
			c := cid.Cid(ref.Ref).String()
			if b.want[c] == nil {
				b.want[c] = map[string]blobUse{}
			}
			b.want[c][path] = blobUse{mimeType: ref.MimeType, size: ref.Size}
		}
	}
	if err := st.EachBlobRef(ctx, did, func(coll, rkey, c string) error {
		b.have[refKey(coll+"/"+rkey, c)] = true
		return nil
	}); err != nil {
		r.add(did, "cannot read the blob reference index: %v", err)
	}
	if err := st.EachBlobRow(ctx, did, func(row BlobRow) error {
		b.rows[row.CID] = row
		return nil
	}); err != nil {
		r.add(did, "cannot read the blob index: %v", err)
	}
	return b
}

// checkBlobs verifies an account's blobs: the reference index against the
// references the record blocks hold, each referenced blob recorded and
// marked referenced with the type and size the records say, and, when
// store is given, present in the store with that size and hashing to its
// CID. It returns the number of blobs recorded.
func checkBlobs(ctx context.Context, st Store, store BlobStore, a Account, s *repoState, r *Report) *blobState {
	did := s.did
	b := readBlobState(ctx, st, s, r)

	// The reference index is derived from the records.
	for _, c := range sortedKeys(b.want) {
		for _, path := range sortedKeys(b.want[c]) {
			if !b.have[refKey(path, c)] {
				r.add(did, "record %s references blob %s, but the blob reference index does not list it (pds check --repair rebuilds the index)", path, c)
			}
		}
	}
	for _, k := range sortedKeys(b.have) {
		path, c, _ := strings.Cut(k, " ")
		if _, uses := b.want[c][path]; uses {
			continue
		}
		_, indexed := s.index[path]
		_, read := s.refs[path]
		switch {
		case !indexed:
			r.add(did, "the blob reference index says record %s references blob %s, but there is no such record (pds check --repair rebuilds the index)", path, c)
		case read:
			r.add(did, "the blob reference index says record %s references blob %s, but the record does not (pds check --repair rebuilds the index)", path, c)
		}
	}

	// Every referenced blob is held, whole.
	for _, c := range sortedKeys(b.want) {
		uses := b.want[c]
		paths := sortedKeys(uses)
		what := "referenced by record " + strings.Join(paths, ", ")
		row, ok := b.rows[c]
		if !ok {
			if a.Status == "active" {
				r.add(did, "blob %s %s is not in the blob index: it was never uploaded, or its row is lost; upload it again or restore from a backup", c, what)
			} else {
				r.Notes = append(r.Notes, fmt.Sprintf("%s: blob %s %s has not been uploaded yet (the account is %s; com.atproto.repo.listMissingBlobs lists it)", did, c, what, a.Status))
			}
			continue
		}
		if !row.Marked {
			r.add(did, "blob %s is %s but marked unreferenced, so the collector would delete it (pds check --repair marks it)", c, what)
		}
		for _, path := range paths {
			u := uses[path]
			if u.size >= 0 && (u.mimeType != row.MimeType || u.size != row.Size) {
				r.add(did, "record %s references blob %s as %s of %d bytes, but it was uploaded as %s of %d bytes", path, c, u.mimeType, u.size, row.MimeType, row.Size)
			}
		}
		if store != nil {
			checkBlobBytes(ctx, store, did, c, row.Size, what, true, r)
		}
	}
	for _, c := range sortedKeys(b.rows) {
		if _, used := b.want[c]; used {
			continue
		}
		if b.rows[c].Marked && b.complete {
			r.add(did, "blob %s is marked referenced but no record references it, so it would never be collected (pds check --repair unmarks it)", c)
		}
		if store != nil {
			checkBlobBytes(ctx, store, did, c, b.rows[c].Size, "(referenced by no record)", false, r)
		}
	}
	return b
}

// checkBlobBytes checks one recorded blob in the store: present with its
// size and, if hash, hashing to its CID.
func checkBlobBytes(ctx context.Context, store BlobStore, did, c string, size int64, what string, hash bool, r *Report) {
	cc, err := cid.Decode(c)
	if err != nil {
		r.add(did, "blob index row with invalid CID %q", c)
		return
	}
	key := blob.Key{DID: syntax.DID(did), CID: cc}
	got, err := store.Stat(ctx, key)
	switch {
	case errors.Is(err, blob.ErrNotFound) && hash:
		r.add(did, "blob %s %s is missing from the blob store: restore %s from a backup (it cannot be derived)", c, what, "blobs/"+blob.RelPath(key))
		return
	case errors.Is(err, blob.ErrNotFound):
		r.add(did, "blob %s %s is recorded but missing from the blob store (pds check --repair forgets it)", c, what)
		return
	case err != nil:
		r.add(did, "cannot read blob %s from the blob store: %v", c, err)
		return
	case got != size:
		r.add(did, "blob %s %s has %d bytes in the blob store, but %d were uploaded: it is damaged; restore %s from a backup", c, what, got, size, "blobs/"+blob.RelPath(key))
		return
	}
	if !hash {
		return
	}
	ok, err := hashesTo(ctx, store, key)
	if err != nil {
		r.add(did, "cannot read blob %s from the blob store: %v", c, err)
	} else if !ok {
		r.add(did, "blob %s %s is damaged: its bytes in the blob store do not hash to its CID; restore %s from a backup", c, what, "blobs/"+blob.RelPath(key))
	}
}

// hashesTo reads a stored blob and reports whether it hashes to its CID.
func hashesTo(ctx context.Context, store BlobStore, key blob.Key) (bool, error) {
	if key.CID.Prefix().MhType != multihash.SHA2_256 {
		return false, fmt.Errorf("unsupported hash in %s", key.CID)
	}
	rc, err := store.Get(ctx, key, 0, -1)
	if err != nil {
		return false, err
	}
	defer rc.Close()
	h := sha256.New()
	if _, err := io.Copy(h, rc); err != nil {
		return false, err
	}
	dec, err := multihash.Decode(key.CID.Hash())
	if err != nil {
		return false, err
	}
	return string(h.Sum(nil)) == string(dec.Digest), nil
}

// repairBlobs rebuilds an account's blob reference index from the records
// and marks the recorded blobs to match, then forgets recorded blobs that
// no record references and the store no longer has. Missing or damaged
// referenced blobs cannot be derived; the check that follows names them.
func repairBlobs(ctx context.Context, st Fixer, store BlobStore, s *repoState, r *Report, nowMillis int64) error {
	did := s.did
	b := readBlobState(ctx, st, s, &Report{})
	if !b.complete {
		r.add(did, "blob references not rebuilt: some records cannot be read (see the repository's problems)")
		return nil
	}
	for _, c := range sortedKeys(b.want) {
		for _, path := range sortedKeys(b.want[c]) {
			if b.have[refKey(path, c)] {
				continue
			}
			coll, rkey, _ := strings.Cut(path, "/")
			if err := st.PutBlobRef(ctx, did, coll, rkey, c, s.index[path].rev); err != nil {
				return fmt.Errorf("repair blob references: %w", err)
			}
			r.Repaired = append(r.Repaired, fmt.Sprintf("%s: blob reference index: record %s references blob %s", did, path, c))
		}
	}
	for _, k := range sortedKeys(b.have) {
		path, c, _ := strings.Cut(k, " ")
		if _, uses := b.want[c][path]; uses {
			continue
		}
		coll, rkey, _ := strings.Cut(path, "/")
		if err := st.DeleteBlobRef(ctx, did, coll, rkey, c); err != nil {
			return fmt.Errorf("repair blob references: %w", err)
		}
		r.Repaired = append(r.Repaired, fmt.Sprintf("%s: blob reference index: removed record %s -> blob %s, which the record does not reference", did, path, c))
	}
	n, err := st.MarkBlobs(ctx, did, nowMillis)
	if err != nil {
		return fmt.Errorf("repair blob marks: %w", err)
	}
	if n > 0 {
		r.Repaired = append(r.Repaired, fmt.Sprintf("%s: marked %d blob(s) referenced or unreferenced as the records say", did, n))
	}
	if store == nil {
		return nil
	}
	for _, c := range sortedKeys(b.rows) {
		if _, used := b.want[c]; used {
			continue
		}
		cc, err := cid.Decode(c)
		if err != nil {
			continue
		}
		if _, err := store.Stat(ctx, blob.Key{DID: syntax.DID(did), CID: cc}); !errors.Is(err, blob.ErrNotFound) {
			continue
		}
		if err := st.DeleteBlobRow(ctx, did, c); err != nil {
			return fmt.Errorf("repair blob index: %w", err)
		}
		r.Repaired = append(r.Repaired, fmt.Sprintf("%s: forgot blob %s, which no record references and the blob store no longer has", did, c))
	}
	return nil
}
