package sqlite

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"stratus/internal/status"
)

// The read-only queries behind the operator's status report.

// Sizes returns the size in bytes of the database file and of its
// write-ahead log (0 when there is none).
func (db *DB) Sizes() (database, wal int64, err error) {
	fi, err := os.Stat(db.path)
	if err != nil {
		return 0, 0, fmt.Errorf("database size: %w", err)
	}
	if wi, err := os.Stat(db.path + "-wal"); err == nil {
		wal = wi.Size()
	}
	return fi.Size(), wal, nil
}

// CollectionCounts returns the number of records in each collection of
// did's repository, in collection order.
func (db *DB) CollectionCounts(ctx context.Context, did syntax.DID) ([]status.Collection, error) {
	rows, err := db.query(ctx, "SELECT collection, COUNT(*) FROM records WHERE did = ? GROUP BY collection ORDER BY collection", did.String())
	if err != nil {
		return nil, fmt.Errorf("count records: %w", err)
	}
	defer rows.Close()
	out := []status.Collection{}
	for rows.Next() {
		var c status.Collection
		if err := rows.Scan(&c.Name, &c.Records); err != nil {
			return nil, fmt.Errorf("count records: %w", err)
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// CredentialCounts counts did's live login sessions (a session with an
// unexpired, unrotated refresh token that was not ended), its app
// passwords and its live OAuth grants.
func (db *DB) CredentialCounts(ctx context.Context, did syntax.DID, now time.Time) (status.Sessions, error) {
	var s status.Sessions
	t := now.Unix()
	err := db.queryRow(ctx, `SELECT
		(SELECT COUNT(DISTINCT sid) FROM refresh_tokens WHERE did = ? AND next_jti IS NULL AND expires_at > ?
			AND sid NOT IN (SELECT sid FROM revoked_sessions WHERE expires_at > ?)),
		(SELECT COUNT(*) FROM app_passwords WHERE did = ?),
		(SELECT COUNT(*) FROM oauth_grants WHERE did = ? AND (expires_at = 0 OR expires_at > ?)
			AND (access_expires_at > ? OR refresh_expires_at > ?))`,
		did.String(), t, t, did.String(), did.String(), t, t, t).Scan(&s.Active, &s.AppPasswords, &s.OAuthGrants)
	if err != nil {
		return status.Sessions{}, fmt.Errorf("count sessions: %w", err)
	}
	return s, nil
}

// RecentEvents returns up to limit of the newest firehose events, newest
// first, each summarised with status.Describe.
func (db *DB) RecentEvents(ctx context.Context, limit int) ([]status.Event, error) {
	rows, err := db.query(ctx, "SELECT seq, type, payload, created_at FROM firehose_events ORDER BY seq DESC LIMIT ?", limit)
	if err != nil {
		return nil, fmt.Errorf("read recent events: %w", err)
	}
	defer rows.Close()
	out := []status.Event{}
	for rows.Next() {
		var ev status.Event
		var payload []byte
		var created string
		if err := rows.Scan(&ev.Seq, &ev.Type, &payload, &created); err != nil {
			return nil, fmt.Errorf("read recent events: %w", err)
		}
		ev.Time, _ = time.Parse(timeLayout, created)
		ev.Detail = status.Describe(ev.Type, payload)
		out = append(out, ev)
	}
	return out, rows.Err()
}
