package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

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
		db.txEvents = append(db.txEvents, sequencer.Stored{Seq: seq, Type: ev.Type, Payload: ev.Payload})
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

// EventStore implements sequencer.Store over the firehose_events table.
type EventStore struct{ db *DB }

// Events returns the event store of db.
func (db *DB) Events() *EventStore { return &EventStore{db: db} }

var _ sequencer.Store = (*EventStore)(nil)

// EventsAfter implements sequencer.Store.
func (s *EventStore) EventsAfter(ctx context.Context, after int64, limit int) ([]sequencer.Stored, error) {
	rows, err := s.db.query(ctx, "SELECT seq, type, payload FROM firehose_events WHERE seq > ? ORDER BY seq LIMIT ?", after, limit)
	if err != nil {
		return nil, fmt.Errorf("read events: %w", err)
	}
	defer rows.Close()
	var out []sequencer.Stored
	for rows.Next() {
		var ev sequencer.Stored
		if err := rows.Scan(&ev.Seq, &ev.Type, &ev.Payload); err != nil {
			return nil, fmt.Errorf("scan event: %w", err)
		}
		out = append(out, ev)
	}
	return out, rows.Err()
}

// SeqBounds implements sequencer.Store. The latest seq comes from SQLite's
// AUTOINCREMENT counter, which survives pruning every row, so a seq is
// never handed out twice.
func (s *EventStore) SeqBounds(ctx context.Context) (oldest, latest int64, err error) {
	err = s.db.queryRow(ctx, `SELECT
		COALESCE((SELECT MIN(seq) FROM firehose_events), 0),
		COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'firehose_events'), 0)`).Scan(&oldest, &latest)
	if err != nil {
		return 0, 0, fmt.Errorf("read seq bounds: %w", err)
	}
	return oldest, latest, nil
}

// PruneBefore deletes the events created before cutoff, in batches so that
// writers are never held up for long, and returns how many it deleted.
// Since seq order is time order it deletes from the lowest seq up.
func (s *EventStore) PruneBefore(ctx context.Context, cutoff time.Time) (int64, error) {
	ts := cutoff.UTC().Format("2006-01-02T15:04:05.000Z")
	var total int64
	for {
		var n int64
		err := s.db.withTx(ctx, func(tx *sql.Tx) error {
			res, err := tx.ExecContext(ctx, `DELETE FROM firehose_events WHERE seq IN (
				SELECT seq FROM firehose_events WHERE created_at < ? ORDER BY seq LIMIT 1000)`, ts)
			if err != nil {
				return fmt.Errorf("prune events: %w", err)
			}
			n, err = res.RowsAffected()
			return err
		})
		if err != nil {
			return total, err
		}
		total += n
		if n < 1000 {
			return total, nil
		}
	}
}
