package sqlite

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"

	"stratus/internal/repo"
)

// RepoStore implements repo.Store.
type RepoStore struct{ db *DB }

// Repos returns the repository store of db.
func (db *DB) Repos() *RepoStore { return &RepoStore{db: db} }

var _ repo.Store = (*RepoStore)(nil)

// Head implements repo.Store.
func (s *RepoStore) Head(ctx context.Context, did syntax.DID) (repo.Head, error) {
	return scanHead(s.db.queryRow(ctx, "SELECT commit_cid, data_cid, rev FROM repo_roots WHERE did = ?", did.String()))
}

// scanHead reads a row of commit_cid, data_cid, rev and, with extra,
// further columns into extra.
func scanHead(row rowScanner, extra ...any) (repo.Head, error) {
	var commitB, dataB []byte
	var rev string
	if err := row.Scan(append([]any{&commitB, &dataB, &rev}, extra...)...); err != nil {
		if isNoRows(err) {
			return repo.Head{}, repo.ErrNoRepo
		}
		return repo.Head{}, fmt.Errorf("read head: %w", err)
	}
	commit, err := cid.Cast(commitB)
	if err != nil {
		return repo.Head{}, fmt.Errorf("decode head commit: %w", err)
	}
	data, err := cid.Cast(dataB)
	if err != nil {
		return repo.Head{}, fmt.Errorf("decode head data: %w", err)
	}
	return repo.Head{Commit: commit, Data: data, Rev: syntax.TID(rev)}, nil
}

// Block implements repo.Store.
func (s *RepoStore) Block(ctx context.Context, did syntax.DID, c cid.Cid) ([]byte, error) {
	var data []byte
	err := s.db.queryRow(ctx, sqlBlock, did.String(), c.Bytes()).Scan(&data)
	if isNoRows(err) {
		return nil, repo.ErrBlockNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read block: %w", err)
	}
	return data, nil
}

// sqlBlock reads a block: a record's from repo_blocks, the current
// commit from its root row (see migration 0007).
const sqlBlock = `SELECT data FROM repo_blocks WHERE did = ?1 AND cid = ?2
	UNION ALL SELECT commit_data FROM repo_roots WHERE did = ?1 AND commit_cid = ?2 AND commit_data IS NOT NULL
	LIMIT 1`

// SQL of the commit path, prepared once on the write connection: compiling
// a statement costs more than running it. The commit block is stored in
// the root row with the head, not in repo_blocks.
const (
	sqlPutBlock    = "INSERT OR IGNORE INTO repo_blocks (did, cid, rev, data) VALUES (?, ?, ?, ?)"
	sqlIndexRecord = `INSERT INTO records (did, collection, rkey, cid, rev) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (did, collection, rkey) DO UPDATE SET cid = excluded.cid, rev = excluded.rev`
	sqlUnindexRecord = "DELETE FROM records WHERE did = ? AND collection = ? AND rkey = ?"
	sqlMaybeDrop     = `DELETE FROM repo_blocks WHERE did = ? AND cid = ?
		AND NOT EXISTS (SELECT 1 FROM records WHERE did = ? AND cid = ?)`
	sqlCreateHead = "INSERT INTO repo_roots (did, commit_cid, data_cid, rev, commit_data) VALUES (?, ?, ?, ?, ?)"
	sqlMoveHead   = "UPDATE repo_roots SET commit_cid = ?, data_cid = ?, rev = ?, commit_data = ? WHERE did = ? AND commit_cid = ?"
	// sqlMoveHeadActive is sqlMoveHead that also requires the account to
	// be active: one statement instead of two on every commit.
	sqlMoveHeadActive = `UPDATE repo_roots SET commit_cid = ?, data_cid = ?, rev = ?, commit_data = ? WHERE did = ? AND commit_cid = ?
		AND EXISTS (SELECT 1 FROM accounts WHERE did = ? AND status = 'active')`
	sqlAccountStatus = "SELECT status FROM accounts WHERE did = ?"
	sqlAppendEvent   = "INSERT INTO firehose_events (did, type, payload, created_at) VALUES (?, ?, ?, ?)"
	sqlSavepoint     = "SAVEPOINT batch"
	sqlRollbackTo    = "ROLLBACK TO batch"
	sqlRelease       = "RELEASE batch"
)

// Apply implements repo.Store: the whole batch in one write transaction.
func (s *RepoStore) Apply(ctx context.Context, b *repo.Batch) ([]int64, error) {
	seqs, errs, err := s.ApplyGroup(ctx, []*repo.Batch{b})
	if err != nil {
		return nil, err
	}
	if errs[0] != nil {
		return nil, errs[0]
	}
	return seqs[0], nil
}

// ApplyGroup implements repo.Store: every batch in one write transaction
// (one fsync for all), each inside its own savepoint so that a refused
// batch is rolled back alone.
func (s *RepoStore) ApplyGroup(ctx context.Context, bs []*repo.Batch) ([][]int64, []error, error) {
	seqs := make([][]int64, len(bs))
	errs := make([]error, len(bs))
	err := s.db.withTx(ctx, func(tx *sql.Tx) error {
		if len(bs) == 1 {
			// No savepoint needed: a refusal rolls back the transaction.
			seqs[0], errs[0] = s.apply(ctx, tx, bs[0])
			return errs[0]
		}
		savepoint := tx.StmtContext(ctx, s.db.stmt(sqlSavepoint))
		rollback := tx.StmtContext(ctx, s.db.stmt(sqlRollbackTo))
		release := tx.StmtContext(ctx, s.db.stmt(sqlRelease))
		for i, b := range bs {
			if _, err := savepoint.ExecContext(ctx); err != nil {
				return fmt.Errorf("savepoint: %w", err)
			}
			appended := len(s.db.txEvents)
			seqs[i], errs[i] = s.apply(ctx, tx, b)
			if errs[i] != nil {
				seqs[i] = nil
				if _, err := rollback.ExecContext(ctx); err != nil {
					return fmt.Errorf("roll back batch: %w", err)
				}
				// Its events are rolled back with it.
				s.db.txEvents = s.db.txEvents[:appended]
			}
			if _, err := release.ExecContext(ctx); err != nil {
				return fmt.Errorf("release savepoint: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		if len(bs) == 1 && errs[0] != nil {
			return nil, errs, nil
		}
		return nil, nil, err
	}
	return seqs, errs, nil
}

// apply writes one batch inside tx.
func (s *RepoStore) apply(ctx context.Context, tx *sql.Tx, b *repo.Batch) ([]int64, error) {
	st := func(q string) *sql.Stmt { return tx.StmtContext(ctx, s.db.stmt(q)) }
	did := b.DID.String()
	rev := b.Rev.String()
	var commit []byte
	if len(b.Put) > 0 {
		put := st(sqlPutBlock)
		for _, blk := range b.Put {
			if blk.CID == b.Head.Commit {
				commit = blk.Data // stored with the head
				continue
			}
			if _, err := put.ExecContext(ctx, did, blk.CID.Bytes(), rev, blk.Data); err != nil {
				return nil, fmt.Errorf("insert block: %w", err)
			}
		}
	}
	if len(b.Upsert) > 0 {
		index := st(sqlIndexRecord)
		for _, e := range b.Upsert {
			if _, err := index.ExecContext(ctx, did, e.Collection.String(), e.RKey.String(), e.CID.Bytes(), rev); err != nil {
				return nil, fmt.Errorf("index record: %w", err)
			}
		}
	}
	for _, e := range b.Delete {
		if _, err := st(sqlUnindexRecord).ExecContext(ctx, did, e.Collection.String(), e.RKey.String()); err != nil {
			return nil, fmt.Errorf("unindex record: %w", err)
		}
	}
	if commit == nil {
		return nil, fmt.Errorf("batch for %s lacks its commit block %s", did, b.Head.Commit)
	}
	for _, c := range b.MaybeDrop {
		if _, err := st(sqlMaybeDrop).ExecContext(ctx, did, c.Bytes(), did, c.Bytes()); err != nil {
			return nil, fmt.Errorf("drop record block: %w", err)
		}
	}
	if b.Prev == nil {
		if _, err := st(sqlCreateHead).ExecContext(ctx, did, b.Head.Commit.Bytes(), b.Head.Data.Bytes(), b.Head.Rev.String(), commit); err != nil {
			return nil, fmt.Errorf("create head: %w", err)
		}
	} else {
		// Compare-and-set: refuse the batch if the stored head is not
		// the one it was built on (a second writer bypassed the lock, or
		// the batch it was built on was refused).
		var res sql.Result
		var err error
		if b.RequireActive {
			res, err = st(sqlMoveHeadActive).ExecContext(ctx, b.Head.Commit.Bytes(), b.Head.Data.Bytes(), b.Head.Rev.String(), commit, did, b.Prev.Commit.Bytes(), did)
		} else {
			res, err = st(sqlMoveHead).ExecContext(ctx, b.Head.Commit.Bytes(), b.Head.Data.Bytes(), b.Head.Rev.String(), commit, did, b.Prev.Commit.Bytes())
		}
		if err != nil {
			return nil, fmt.Errorf("set head: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil || n != 1 {
			if b.RequireActive {
				// Refused: tell an inactive account from a moved head.
				var status string
				if err := st(sqlAccountStatus).QueryRowContext(ctx, did).Scan(&status); err != nil {
					return nil, fmt.Errorf("read account status: %w", err)
				}
				if status != "active" {
					return nil, repo.ErrInactive
				}
			}
			return nil, fmt.Errorf("%w: not at %s", repo.ErrHeadMoved, b.Prev.Commit)
		}
	}
	if err := s.db.linkBlobs(ctx, tx, b); err != nil {
		return nil, err
	}
	return s.db.appendEvents(ctx, tx, did, b.Events)
}

const (
	sqlExportAll = `SELECT b.cid, b.data FROM repo_blocks b WHERE b.did = ?
		AND EXISTS (SELECT 1 FROM records r WHERE r.did = b.did AND r.cid = b.cid)`
	sqlExportSince = `SELECT b.cid, b.data FROM repo_blocks b WHERE b.did = ?
		AND EXISTS (SELECT 1 FROM records r WHERE r.did = b.did AND r.cid = b.cid AND r.rev > ?)`
)

// Record implements repo.Store.
func (s *RepoStore) Record(ctx context.Context, did syntax.DID, collection syntax.NSID, rkey syntax.RecordKey) (repo.Record, error) {
	var cb, data []byte
	err := s.db.queryRow(ctx, `SELECT r.cid, b.data FROM records r
		JOIN repo_blocks b ON b.did = r.did AND b.cid = r.cid
		WHERE r.did = ? AND r.collection = ? AND r.rkey = ?`,
		did.String(), collection.String(), rkey.String()).Scan(&cb, &data)
	if isNoRows(err) {
		return repo.Record{}, repo.ErrBlockNotFound
	}
	if err != nil {
		return repo.Record{}, fmt.Errorf("read record: %w", err)
	}
	c, err := cid.Cast(cb)
	if err != nil {
		return repo.Record{}, fmt.Errorf("decode record cid: %w", err)
	}
	return repo.Record{Collection: collection, RKey: rkey, CID: c, Data: data}, nil
}

// ListRecords implements repo.Store.
func (s *RepoStore) ListRecords(ctx context.Context, did syntax.DID, q repo.ListQuery) ([]repo.Record, error) {
	query := `SELECT r.rkey, r.cid, b.data FROM records r
		JOIN repo_blocks b ON b.did = r.did AND b.cid = r.cid
		WHERE r.did = ? AND r.collection = ?`
	args := []any{did.String(), q.Collection.String()}
	if q.Cursor != "" {
		if q.Reverse {
			query += " AND r.rkey > ?"
		} else {
			query += " AND r.rkey < ?"
		}
		args = append(args, q.Cursor)
	}
	if q.Reverse {
		query += " ORDER BY r.rkey ASC"
	} else {
		query += " ORDER BY r.rkey DESC"
	}
	query += " LIMIT ?"
	args = append(args, q.Limit)
	rows, err := s.db.query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("list records: %w", err)
	}
	defer rows.Close()
	var out []repo.Record
	for rows.Next() {
		var rkey string
		var cb, data []byte
		if err := rows.Scan(&rkey, &cb, &data); err != nil {
			return nil, fmt.Errorf("scan record: %w", err)
		}
		c, err := cid.Cast(cb)
		if err != nil {
			return nil, fmt.Errorf("decode record cid: %w", err)
		}
		out = append(out, repo.Record{Collection: q.Collection, RKey: syntax.RecordKey(rkey), CID: c, Data: data})
	}
	return out, rows.Err()
}

// Collections implements repo.Store.
func (s *RepoStore) Collections(ctx context.Context, did syntax.DID) ([]syntax.NSID, error) {
	rows, err := s.db.query(ctx, "SELECT DISTINCT collection FROM records WHERE did = ? ORDER BY collection", did.String())
	if err != nil {
		return nil, fmt.Errorf("list collections: %w", err)
	}
	defer rows.Close()
	var out []syntax.NSID
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			return nil, fmt.Errorf("scan collection: %w", err)
		}
		out = append(out, syntax.NSID(c))
	}
	return out, rows.Err()
}

// Export implements repo.Store. It reads inside one transaction so the
// blocks match the head even while writes continue.
func (s *RepoStore) Export(ctx context.Context, did syntax.DID, since string, head func(repo.Head, repo.Block) error, each func(repo.Block) error) error {
	tx, err := s.db.read.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("begin export: %w", err)
	}
	defer tx.Rollback()
	// The commit block comes with the head, from the same snapshot and
	// over the same connection: a second read connection per export could
	// leave as many exports as connections waiting on each other.
	var commitData []byte
	h, err := scanHead(tx.QueryRowContext(ctx, "SELECT commit_cid, data_cid, rev, commit_data FROM repo_roots WHERE did = ?", did.String()), &commitData)
	if err != nil {
		return err
	}
	if commitData == nil {
		return fmt.Errorf("export %s: commit block %s: %w", did, h.Commit, repo.ErrBlockNotFound)
	}
	if err := head(h, repo.Block{CID: h.Commit, Data: commitData}); err != nil {
		return err
	}
	// Walk the blocks in key order and keep those an indexed record
	// points to (which leaves out the commit): each block once, with no
	// sort of the whole repository, unlike a join from records grouped by
	// CID.
	q, args := sqlExportAll, []any{did.String()}
	if since != "" {
		q, args = sqlExportSince, append(args, since)
	}
	rows, err := tx.QueryContext(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("export blocks: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var cb, data []byte
		if err := rows.Scan(&cb, &data); err != nil {
			return fmt.Errorf("scan block: %w", err)
		}
		c, err := cid.Cast(cb)
		if err != nil {
			return fmt.Errorf("decode block cid: %w", err)
		}
		if err := each(repo.Block{CID: c, Data: data}); err != nil {
			return err
		}
	}
	return rows.Err()
}

// Keys implements repo.Store.
func (s *RepoStore) Keys(ctx context.Context, did syntax.DID, fn func(key string, c cid.Cid) error) error {
	rows, err := s.db.read.QueryContext(ctx, "SELECT collection, rkey, cid FROM records WHERE did = ?", did.String())
	if err != nil {
		return fmt.Errorf("read record keys: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var coll, rkey string
		var cb []byte
		if err := rows.Scan(&coll, &rkey, &cb); err != nil {
			return fmt.Errorf("scan record key: %w", err)
		}
		c, err := cid.Cast(cb)
		if err != nil {
			return fmt.Errorf("decode record cid: %w", err)
		}
		if err := fn(coll+"/"+rkey, c); err != nil {
			return err
		}
	}
	return rows.Err()
}

// MissingBlocks implements repo.Store.
func (s *RepoStore) MissingBlocks(ctx context.Context, did syntax.DID) ([]string, error) {
	rows, err := s.db.read.QueryContext(ctx, `SELECT collection, rkey FROM records r WHERE did = ?
		AND NOT EXISTS (SELECT 1 FROM repo_blocks b WHERE b.did = r.did AND b.cid = r.cid) LIMIT 10`, did.String())
	if err != nil {
		return nil, fmt.Errorf("find missing blocks: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var coll, rkey string
		if err := rows.Scan(&coll, &rkey); err != nil {
			return nil, err
		}
		out = append(out, coll+"/"+rkey)
	}
	return out, rows.Err()
}

// Stats implements repo.Store.
func (s *RepoStore) Stats(ctx context.Context, did syntax.DID) (blocks, records int64, err error) {
	err = s.db.queryRow(ctx, `SELECT
		(SELECT COUNT(*) FROM repo_blocks WHERE did = ?1) +
		(SELECT COUNT(*) FROM repo_roots WHERE did = ?1 AND commit_data IS NOT NULL),
		(SELECT COUNT(*) FROM records WHERE did = ?1)`, did.String()).Scan(&blocks, &records)
	if err != nil {
		return 0, 0, fmt.Errorf("count repo: %w", err)
	}
	return blocks, records, nil
}
