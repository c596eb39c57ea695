package sqlite

import (
	"context"
	"database/sql"
	"fmt"

	"stratus/internal/repo"
)

var _ repo.Replacer = (*RepoStore)(nil)

// Replace implements repo.Replacer: in one write transaction it checks the
// account is deactivated and still at r.Prev, drops the repository's
// blocks, record index and blob references, writes the new commit, records
// and references, moves the head and appends r.Events. Blobs that lose
// every reference start their unreferenced period; blobs referenced again
// (or uploaded before the import) are kept.
func (s *RepoStore) Replace(ctx context.Context, r *repo.Replacement) ([]int64, error) {
	var seqs []int64
	err := s.db.withTx(ctx, func(tx *sql.Tx) error {
		did := r.DID.String()
		rev := r.Head.Rev.String()
		var status string
		if err := tx.QueryRowContext(ctx, sqlAccountStatus, did).Scan(&status); err != nil {
			return fmt.Errorf("read account status: %w", err)
		}
		if status != "deactivated" {
			return repo.ErrActive
		}
		now := s.db.Now().UnixMilli()
		for _, q := range []string{
			"DELETE FROM repo_blocks WHERE did = ?1",
			"DELETE FROM records WHERE did = ?1",
			"DELETE FROM blob_refs WHERE did = ?1",
			"UPDATE blobs SET unreferenced_at = ?2 WHERE did = ?1 AND unreferenced_at IS NULL",
		} {
			if _, err := tx.ExecContext(ctx, q, did, now); err != nil {
				return fmt.Errorf("clear repository: %w", err)
			}
		}
		put, err := tx.PrepareContext(ctx, sqlPutBlock)
		if err != nil {
			return fmt.Errorf("prepare import: %w", err)
		}
		defer put.Close()
		index, err := tx.PrepareContext(ctx, sqlIndexRecord)
		if err != nil {
			return fmt.Errorf("prepare import: %w", err)
		}
		defer index.Close()
		link, err := tx.PrepareContext(ctx, sqlLinkBlob)
		if err != nil {
			return fmt.Errorf("prepare import: %w", err)
		}
		defer link.Close()
		used, err := tx.PrepareContext(ctx, sqlBlobUsed)
		if err != nil {
			return fmt.Errorf("prepare import: %w", err)
		}
		defer used.Close()

		err = r.Records(func(rec repo.ImportedRecord) error {
			if _, err := put.ExecContext(ctx, did, rec.CID.Bytes(), rev, rec.Data); err != nil {
				return fmt.Errorf("insert record block: %w", err)
			}
			if _, err := index.ExecContext(ctx, did, rec.Collection.String(), rec.RKey.String(), rec.CID.Bytes(), rev); err != nil {
				return fmt.Errorf("index record: %w", err)
			}
			for _, b := range rec.Blobs {
				c := b.CID.String()
				if _, err := link.ExecContext(ctx, did, rec.Collection.String(), rec.RKey.String(), c, rev); err != nil {
					return fmt.Errorf("link blob: %w", err)
				}
				if _, err := used.ExecContext(ctx, did, c); err != nil {
					return fmt.Errorf("link blob: %w", err)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, sqlMoveHead, r.Head.Commit.Bytes(), r.Head.Data.Bytes(), rev, r.Commit.Data, did, r.Prev.Commit.Bytes())
		if err != nil {
			return fmt.Errorf("set head: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil || n != 1 {
			return fmt.Errorf("import: head moved from %s", r.Prev.Commit)
		}
		seqs, err = s.db.appendEvents(ctx, tx, did, r.Events)
		return err
	})
	if err != nil {
		return nil, err
	}
	return seqs, nil
}
