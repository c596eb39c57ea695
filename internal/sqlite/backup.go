package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// SnapshotTo writes a consistent copy of the database at src to the new
// file dest with VACUUM INTO: it reads one transaction's snapshot, so a
// server may keep committing meanwhile, and the copy is compact and has no
// WAL to carry along. dest must not exist. The copy is fsynced and made
// readable by its owner only.
func SnapshotTo(ctx context.Context, src, dest string) error {
	if _, err := os.Stat(dest); err == nil {
		return fmt.Errorf("snapshot: %s already exists", dest)
	}
	if _, err := os.Stat(src); err != nil {
		return fmt.Errorf("%w at %s", ErrNoDatabase, src)
	}
	// Not query_only: that pragma also forbids writing the copy.
	db, err := sql.Open("sqlite", "file:"+filepath.ToSlash(src)+"?mode=rw&_pragma=busy_timeout(10000)")
	if err != nil {
		return fmt.Errorf("open db: %w", err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, "VACUUM INTO ?", dest); err != nil {
		os.Remove(dest)
		return fmt.Errorf("snapshot database: %w", err)
	}
	if err := os.Chmod(dest, 0o600); err != nil {
		return err
	}
	f, err := os.Open(dest)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// RaiseSeqFloor makes the next firehose seq greater than floor (it never
// lowers the counter) and returns the counter's new value.
func (db *DB) RaiseSeqFloor(ctx context.Context, floor int64) (int64, error) {
	var now int64
	err := db.withTx(ctx, func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, "SELECT seq FROM sqlite_sequence WHERE name = 'firehose_events'").Scan(&now)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			now = floor
			_, err = tx.ExecContext(ctx, "INSERT INTO sqlite_sequence (name, seq) VALUES ('firehose_events', ?)", floor)
			return err
		case err != nil:
			return err
		case now < floor:
			now = floor
			_, err = tx.ExecContext(ctx, "UPDATE sqlite_sequence SET seq = ? WHERE name = 'firehose_events'", floor)
			return err
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("raise firehose seq: %w", err)
	}
	return now, nil
}

// LatestSeq returns the firehose sequence counter: the highest seq ever
// handed out.
func (db *DB) LatestSeq(ctx context.Context) (int64, error) {
	_, latest, err := db.Events().SeqBounds(ctx)
	return latest, err
}

// QuickCheck runs PRAGMA quick_check (integrity_check without the index
// cross-checks, so about as fast as reading the file once) and returns its
// complaints; none when the file is sound.
func (db *DB) QuickCheck(ctx context.Context) ([]string, error) {
	rows, err := db.read.QueryContext(ctx, "PRAGMA quick_check")
	if err != nil {
		return nil, fmt.Errorf("quick_check: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			return out, fmt.Errorf("quick_check: %w", err)
		}
		if line != "ok" {
			out = append(out, line)
		}
	}
	if err := rows.Err(); err != nil {
		return out, fmt.Errorf("quick_check: %w", err)
	}
	return out, nil
}
