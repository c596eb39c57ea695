package sqlite

import (
	"context"
	"database/sql"
	"fmt"

	"stratus/internal/sequencer"
)

// appendEvents inserts firehose events inside tx and returns their seqs.
// AUTOINCREMENT guarantees a seq is never reused, even after the newest
// rows are deleted.
func (db *DB) appendEvents(ctx context.Context, tx *sql.Tx, did string, evs []sequencer.Event) ([]int64, error) {
	seqs := make([]int64, 0, len(evs))
	now := db.now()
	ins := tx.StmtContext(ctx, db.stmt(sqlAppendEvent))
	for _, ev := range evs {
		res, err := ins.ExecContext(ctx, did, ev.Type, ev.Payload, now)
		if err != nil {
			return nil, fmt.Errorf("append event: %w", err)
		}
		seq, err := res.LastInsertId()
		if err != nil {
			return nil, fmt.Errorf("event seq: %w", err)
		}
		seqs = append(seqs, seq)
	}
	return seqs, nil
}

// LastEventPayload returns the payload of the newest event of a type. It
// exists for tests and diagnostics.
func (db *DB) LastEventPayload(ctx context.Context, typ string) ([]byte, error) {
	var p []byte
	err := db.read.QueryRowContext(ctx, "SELECT payload FROM firehose_events WHERE type = ? ORDER BY seq DESC LIMIT 1", typ).Scan(&p)
	if err != nil {
		return nil, fmt.Errorf("read last event: %w", err)
	}
	return p, nil
}
