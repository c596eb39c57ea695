package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"

	"stratus/internal/blob"
	"stratus/internal/repo"
)

// BlobIndex implements blob.Index.
type BlobIndex struct{ db *DB }

// Blobs returns the blob index of db.
func (db *DB) Blobs() *BlobIndex { return &BlobIndex{db: db} }

var _ blob.Index = (*BlobIndex)(nil)

// SQL of the commit path's blob references (see linkBlobs).
const (
	sqlUnlinkRecord = "DELETE FROM blob_refs WHERE did = ? AND collection = ? AND rkey = ? RETURNING cid"
	sqlHeldBlob     = "SELECT mime_type, size FROM blobs WHERE did = ? AND cid = ?"
	sqlLinkBlob     = "INSERT OR IGNORE INTO blob_refs (did, collection, rkey, cid, rev) VALUES (?, ?, ?, ?, ?)"
	sqlBlobUsed     = "UPDATE blobs SET unreferenced_at = NULL WHERE did = ? AND cid = ? AND unreferenced_at IS NOT NULL"
	sqlBlobUnused   = `UPDATE blobs SET unreferenced_at = ? WHERE did = ? AND cid = ? AND unreferenced_at IS NULL
		AND NOT EXISTS (SELECT 1 FROM blob_refs WHERE did = ? AND cid = ?)`
)

var blobWriteStatements = []string{sqlUnlinkRecord, sqlHeldBlob, sqlLinkBlob, sqlBlobUsed, sqlBlobUnused}

// linkBlobs replaces the blob references of the records batch b writes,
// inside the commit's transaction: the references of every indexed or
// unindexed record are dropped, b.Blobs are added (each must be held with
// the referenced type and size unless b.AllowMissingBlobs), and blobs left
// with no reference start their unreferenced period now.
func (db *DB) linkBlobs(ctx context.Context, tx *sql.Tx, b *repo.Batch) error {
	st := func(q string) *sql.Stmt { return tx.StmtContext(ctx, db.stmt(q)) }
	did := b.DID.String()
	dropped := map[string]bool{}
	unlink := func(e repo.IndexEntry) error {
		rows, err := st(sqlUnlinkRecord).QueryContext(ctx, did, e.Collection.String(), e.RKey.String())
		if err != nil {
			return fmt.Errorf("unlink blobs: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var c string
			if err := rows.Scan(&c); err != nil {
				return fmt.Errorf("unlink blobs: %w", err)
			}
			dropped[c] = true
		}
		return rows.Err()
	}
	for _, e := range b.Upsert {
		if e.Created {
			// A new path has no references yet; skipping the query is
			// a tenth of a create's server time.
			continue
		}
		if err := unlink(e); err != nil {
			return err
		}
	}
	for _, e := range b.Delete {
		if err := unlink(e); err != nil {
			return err
		}
	}
	for _, ref := range b.Blobs {
		c := ref.CID.String()
		var mimeType string
		var size int64
		err := st(sqlHeldBlob).QueryRowContext(ctx, did, c).Scan(&mimeType, &size)
		switch {
		case isNoRows(err):
			if !b.AllowMissingBlobs {
				return &repo.BlobRefError{Ref: ref}
			}
		case err != nil:
			return fmt.Errorf("read blob: %w", err)
		case mimeType != ref.MimeType || size != ref.Size:
			return &repo.BlobRefError{Ref: ref, Held: true, MimeType: mimeType, Size: size}
		}
		if _, err := st(sqlLinkBlob).ExecContext(ctx, did, ref.Collection.String(), ref.RKey.String(), c, b.Rev.String()); err != nil {
			return fmt.Errorf("link blob: %w", err)
		}
		if _, err := st(sqlBlobUsed).ExecContext(ctx, did, c); err != nil {
			return fmt.Errorf("link blob: %w", err)
		}
		delete(dropped, c)
	}
	now := db.Now().UnixMilli()
	for c := range dropped {
		if _, err := st(sqlBlobUnused).ExecContext(ctx, now, did, c, did, c); err != nil {
			return fmt.Errorf("unlink blob: %w", err)
		}
	}
	return nil
}

// Add implements blob.Index. A blob that records already reference (they
// were imported before it was uploaded) is recorded as referenced.
func (x *BlobIndex) Add(ctx context.Context, did syntax.DID, m blob.Meta, now time.Time) (blob.Meta, error) {
	var got blob.Meta
	got.CID = m.CID
	err := x.db.write.QueryRowContext(ctx, `INSERT INTO blobs (did, cid, mime_type, size, created_at, unreferenced_at)
		VALUES (?1, ?2, ?3, ?4, ?5,
			CASE WHEN EXISTS (SELECT 1 FROM blob_refs WHERE did = ?1 AND cid = ?2) THEN NULL ELSE ?6 END)
		ON CONFLICT (did, cid) DO UPDATE SET unreferenced_at =
			CASE WHEN blobs.unreferenced_at IS NULL THEN NULL ELSE excluded.unreferenced_at END
		RETURNING mime_type, size`,
		did.String(), m.CID.String(), m.MimeType, m.Size, now.UTC().Format("2006-01-02T15:04:05.000Z"), now.UnixMilli(),
	).Scan(&got.MimeType, &got.Size)
	if err != nil {
		return blob.Meta{}, fmt.Errorf("record blob: %w", err)
	}
	return got, nil
}

// Get implements blob.Index.
func (x *BlobIndex) Get(ctx context.Context, key blob.Key) (blob.Meta, error) {
	m := blob.Meta{CID: key.CID}
	err := x.db.queryRow(ctx, "SELECT mime_type, size FROM blobs WHERE did = ? AND cid = ?",
		key.DID.String(), key.CID.String()).Scan(&m.MimeType, &m.Size)
	if isNoRows(err) {
		return blob.Meta{}, blob.ErrNotFound
	}
	if err != nil {
		return blob.Meta{}, fmt.Errorf("read blob: %w", err)
	}
	return m, nil
}

// Has implements blob.Index.
func (x *BlobIndex) Has(ctx context.Context, key blob.Key) (bool, error) {
	_, err := x.Get(ctx, key)
	if errors.Is(err, blob.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// Collectable implements blob.Index.
func (x *BlobIndex) Collectable(ctx context.Context, before time.Time, limit int) ([]blob.Key, error) {
	rows, err := x.db.query(ctx, `SELECT did, cid FROM blobs
		WHERE unreferenced_at IS NOT NULL AND unreferenced_at < ? ORDER BY unreferenced_at LIMIT ?`,
		before.UnixMilli(), limit)
	if err != nil {
		return nil, fmt.Errorf("find collectable blobs: %w", err)
	}
	defer rows.Close()
	var out []blob.Key
	for rows.Next() {
		k, err := scanKey(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, rows.Err()
}

func scanKey(rows rowScanner) (blob.Key, error) {
	var d, c string
	if err := rows.Scan(&d, &c); err != nil {
		return blob.Key{}, fmt.Errorf("scan blob: %w", err)
	}
	cc, err := cid.Decode(c)
	if err != nil {
		return blob.Key{}, fmt.Errorf("decode blob cid: %w", err)
	}
	return blob.Key{DID: syntax.DID(d), CID: cc}, nil
}

// Forget implements blob.Index: one statement, so the check that the blob
// is still unreferenced and the delete are atomic against commits. Nothing
// is forgotten while a backup holds collection (blob_holds; see HoldBlobs),
// checked in the same statement so a hold taken before a backup's snapshot
// keeps every blob the snapshot lists; the hold's expiry is compared with
// the wall clock, not the collection's (possibly simulated) time.
func (x *BlobIndex) Forget(ctx context.Context, key blob.Key, before time.Time) (bool, error) {
	res, err := x.db.write.ExecContext(ctx, `DELETE FROM blobs
		WHERE did = ?1 AND cid = ?2 AND unreferenced_at IS NOT NULL AND unreferenced_at < ?3
		AND NOT EXISTS (SELECT 1 FROM blob_refs WHERE did = ?1 AND cid = ?2)
		AND NOT EXISTS (SELECT 1 FROM blob_holds WHERE expires_at > ?4)`,
		key.DID.String(), key.CID.String(), before.UnixMilli(), x.db.Now().UnixMilli())
	if err != nil {
		return false, fmt.Errorf("forget blob: %w", err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// ListReferenced implements blob.Index.
func (x *BlobIndex) ListReferenced(ctx context.Context, did syntax.DID, since, cursor string, limit int) ([]cid.Cid, error) {
	rows, err := x.db.query(ctx, `SELECT DISTINCT r.cid FROM blob_refs r
		JOIN blobs b ON b.did = r.did AND b.cid = r.cid
		WHERE r.did = ? AND r.rev > ? AND r.cid > ? ORDER BY r.cid LIMIT ?`,
		did.String(), since, cursor, limit)
	if err != nil {
		return nil, fmt.Errorf("list blobs: %w", err)
	}
	defer rows.Close()
	var out []cid.Cid
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			return nil, fmt.Errorf("scan blob: %w", err)
		}
		cc, err := cid.Decode(c)
		if err != nil {
			return nil, fmt.Errorf("decode blob cid: %w", err)
		}
		out = append(out, cc)
	}
	return out, rows.Err()
}

// ListMissing implements blob.Index.
func (x *BlobIndex) ListMissing(ctx context.Context, did syntax.DID, cursor string, limit int) ([]blob.Missing, error) {
	rows, err := x.db.query(ctx, `SELECT r.cid, MIN(r.collection || '/' || r.rkey) FROM blob_refs r
		WHERE r.did = ?1 AND r.cid > ?2
		AND NOT EXISTS (SELECT 1 FROM blobs b WHERE b.did = r.did AND b.cid = r.cid)
		GROUP BY r.cid ORDER BY r.cid LIMIT ?3`, did.String(), cursor, limit)
	if err != nil {
		return nil, fmt.Errorf("list missing blobs: %w", err)
	}
	defer rows.Close()
	var out []blob.Missing
	for rows.Next() {
		var c, path string
		if err := rows.Scan(&c, &path); err != nil {
			return nil, fmt.Errorf("scan missing blob: %w", err)
		}
		cc, err := cid.Decode(c)
		if err != nil {
			return nil, fmt.Errorf("decode blob cid: %w", err)
		}
		out = append(out, blob.Missing{CID: cc, RecordURI: syntax.ATURI("at://" + did.String() + "/" + path)})
	}
	return out, rows.Err()
}

// Stats implements blob.Index.
func (x *BlobIndex) Stats(ctx context.Context) (blob.Stats, error) {
	var s blob.Stats
	err := x.db.queryRow(ctx, `SELECT
		(SELECT COUNT(*) FROM blobs),
		(SELECT COALESCE(SUM(size), 0) FROM blobs),
		(SELECT COUNT(*) FROM blobs WHERE unreferenced_at IS NOT NULL),
		(SELECT COUNT(*) FROM (SELECT DISTINCT did, cid FROM blob_refs r
			WHERE NOT EXISTS (SELECT 1 FROM blobs b WHERE b.did = r.did AND b.cid = r.cid)))`,
	).Scan(&s.Blobs, &s.Bytes, &s.Unreferenced, &s.Missing)
	if err != nil {
		return blob.Stats{}, fmt.Errorf("count blobs: %w", err)
	}
	return s, nil
}

// Each implements blob.Index.
func (x *BlobIndex) Each(ctx context.Context, fn func(blob.Key, blob.Meta) error) error {
	rows, err := x.db.read.QueryContext(ctx, "SELECT did, cid, mime_type, size FROM blobs ORDER BY did, cid")
	if err != nil {
		return fmt.Errorf("list blobs: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var d, c, mimeType string
		var size int64
		if err := rows.Scan(&d, &c, &mimeType, &size); err != nil {
			return fmt.Errorf("scan blob: %w", err)
		}
		cc, err := cid.Decode(c)
		if err != nil {
			return fmt.Errorf("decode blob cid: %w", err)
		}
		if err := fn(blob.Key{DID: syntax.DID(d), CID: cc}, blob.Meta{CID: cc, MimeType: mimeType, Size: size}); err != nil {
			return err
		}
	}
	return rows.Err()
}

// EachReferenced implements blob.Index.
func (x *BlobIndex) EachReferenced(ctx context.Context, fn func(blob.Key, bool) error) error {
	rows, err := x.db.read.QueryContext(ctx, `SELECT DISTINCT r.did, r.cid,
		EXISTS (SELECT 1 FROM blobs b WHERE b.did = r.did AND b.cid = r.cid)
		FROM blob_refs r ORDER BY r.did, r.cid`)
	if err != nil {
		return fmt.Errorf("list referenced blobs: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var d, c string
		var held bool
		if err := rows.Scan(&d, &c, &held); err != nil {
			return fmt.Errorf("scan referenced blob: %w", err)
		}
		cc, err := cid.Decode(c)
		if err != nil {
			return fmt.Errorf("decode blob cid: %w", err)
		}
		if err := fn(blob.Key{DID: syntax.DID(d), CID: cc}, held); err != nil {
			return err
		}
	}
	return rows.Err()
}

// Counts reports, for checkAccountStatus, how many distinct blobs did's
// records reference (expected) and how many blobs are stored for it
// (imported), counted as the reference PDS counts them.
func (x *BlobIndex) Counts(ctx context.Context, did syntax.DID) (expected, imported int64, err error) {
	err = x.db.queryRow(ctx, `SELECT
		(SELECT COUNT(DISTINCT cid) FROM blob_refs WHERE did = ?1),
		(SELECT COUNT(*) FROM blobs WHERE did = ?1)`, did.String()).Scan(&expected, &imported)
	if err != nil {
		return 0, 0, fmt.Errorf("count account blobs: %w", err)
	}
	return expected, imported, nil
}
