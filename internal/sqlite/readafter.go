package sqlite

import (
	"context"
	"fmt"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"

	"stratus/internal/readafter"
)

// RecordsSince implements readafter.Store: the records of did written in
// a commit after rev, oldest first, at most limit. When no record is at or
// before rev the revision cannot be compared with this repository (it was
// imported, or the AppView's rev is from elsewhere) and nothing is
// returned, as the reference implementation does.
func (db *DB) RecordsSince(ctx context.Context, did syntax.DID, rev string, limit int) ([]readafter.StoredRecord, error) {
	rows, err := db.query(ctx, `SELECT r.collection, r.rkey, r.cid, r.rev, b.data FROM records r
		JOIN repo_blocks b ON b.did = r.did AND b.cid = r.cid
		WHERE r.did = ? AND r.rev > ? ORDER BY r.rev LIMIT ?`, did.String(), rev, limit)
	if err != nil {
		return nil, fmt.Errorf("read records since %s: %w", rev, err)
	}
	defer rows.Close()
	var out []readafter.StoredRecord
	for rows.Next() {
		var r readafter.StoredRecord
		var c []byte
		if err := rows.Scan(&r.Collection, &r.RKey, &c, &r.Rev, &r.Data); err != nil {
			return nil, fmt.Errorf("read record: %w", err)
		}
		if r.CID, err = cid.Cast(c); err != nil {
			return nil, fmt.Errorf("read record cid: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, nil
	}
	var older int
	if err := db.queryRow(ctx, "SELECT count(*) FROM (SELECT 1 FROM records WHERE did = ? AND rev <= ? LIMIT 1)", did.String(), rev).Scan(&older); err != nil {
		return nil, fmt.Errorf("read records since %s: %w", rev, err)
	}
	if older == 0 {
		return nil, nil
	}
	return out, nil
}
