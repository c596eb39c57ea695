package sqlite

import (
	"context"

	"stratus/internal/integrity"
)

// EachBlobRef calls fn for every row of did's blob reference index: the
// record collection/rkey that references the blob cid.
func (in *Inspector) EachBlobRef(ctx context.Context, did string, fn func(collection, rkey, cid string) error) error {
	rows, err := in.tx.QueryContext(ctx, "SELECT collection, rkey, cid FROM blob_refs WHERE did = ? ORDER BY collection, rkey, cid", did)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var coll, rkey, c string
		if err := rows.Scan(&coll, &rkey, &c); err != nil {
			return err
		}
		if err := fn(coll, rkey, c); err != nil {
			return err
		}
	}
	return rows.Err()
}

// EachBlobRow calls fn for every blob recorded as held for did; marked
// says whether the row is marked referenced (no unreferenced period
// running, so the collector leaves it alone).
func (in *Inspector) EachBlobRow(ctx context.Context, did string, fn func(row integrity.BlobRow) error) error {
	rows, err := in.tx.QueryContext(ctx, "SELECT cid, mime_type, size, unreferenced_at IS NULL FROM blobs WHERE did = ? ORDER BY cid", did)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var r integrity.BlobRow
		if err := rows.Scan(&r.CID, &r.MimeType, &r.Size, &r.Marked); err != nil {
			return err
		}
		if err := fn(r); err != nil {
			return err
		}
	}
	return rows.Err()
}

// PutBlobRef adds a row to did's blob reference index (repairs only).
func (in *Inspector) PutBlobRef(ctx context.Context, did, collection, rkey, cid, rev string) error {
	_, err := in.tx.ExecContext(ctx, "INSERT OR IGNORE INTO blob_refs (did, collection, rkey, cid, rev) VALUES (?, ?, ?, ?, ?)",
		did, collection, rkey, cid, rev)
	return err
}

// DeleteBlobRef removes a row of did's blob reference index (repairs only).
func (in *Inspector) DeleteBlobRef(ctx context.Context, did, collection, rkey, cid string) error {
	_, err := in.tx.ExecContext(ctx, "DELETE FROM blob_refs WHERE did = ? AND collection = ? AND rkey = ? AND cid = ?",
		did, collection, rkey, cid)
	return err
}

// DeleteBlobRow forgets a recorded blob (repairs, and backups dropping an
// unreferenced blob collected while they copied).
func (in *Inspector) DeleteBlobRow(ctx context.Context, did, cid string) error {
	_, err := in.tx.ExecContext(ctx, "DELETE FROM blobs WHERE did = ? AND cid = ?", did, cid)
	return err
}

// MarkBlobs makes did's recorded blobs agree with the reference index:
// referenced blobs are marked so (never collected), and unreferenced ones
// that were marked start their unreferenced period at nowMillis. It
// returns how many rows changed (repairs only).
func (in *Inspector) MarkBlobs(ctx context.Context, did string, nowMillis int64) (int64, error) {
	res, err := in.tx.ExecContext(ctx, `UPDATE blobs SET unreferenced_at = NULL
		WHERE did = ?1 AND unreferenced_at IS NOT NULL
		AND EXISTS (SELECT 1 FROM blob_refs r WHERE r.did = blobs.did AND r.cid = blobs.cid)`, did)
	if err != nil {
		return 0, err
	}
	a, _ := res.RowsAffected()
	res, err = in.tx.ExecContext(ctx, `UPDATE blobs SET unreferenced_at = ?2
		WHERE did = ?1 AND unreferenced_at IS NULL
		AND NOT EXISTS (SELECT 1 FROM blob_refs r WHERE r.did = blobs.did AND r.cid = blobs.cid)`, did, nowMillis)
	if err != nil {
		return a, err
	}
	b, _ := res.RowsAffected()
	return a + b, nil
}
