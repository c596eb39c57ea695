package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"stratus/internal/prefs"
)

// PrefStore implements prefs.Store.
type PrefStore struct{ db *DB }

// Prefs returns the preference store of db.
func (db *DB) Prefs() *PrefStore { return &PrefStore{db: db} }

var _ prefs.Store = (*PrefStore)(nil)

// Preferences implements prefs.Store.
func (s *PrefStore) Preferences(ctx context.Context, did syntax.DID) ([]prefs.Pref, error) {
	rows, err := s.db.query(ctx, "SELECT type, value_json FROM account_prefs WHERE did = ? ORDER BY id", did.String())
	if err != nil {
		return nil, fmt.Errorf("read preferences: %w", err)
	}
	defer rows.Close()
	var out []prefs.Pref
	for rows.Next() {
		var p prefs.Pref
		var v string
		if err := rows.Scan(&p.Type, &v); err != nil {
			return nil, fmt.Errorf("read preference: %w", err)
		}
		p.Value = json.RawMessage(v)
		out = append(out, p)
	}
	return out, rows.Err()
}

// ReplacePreferences implements prefs.Store.
func (s *PrefStore) ReplacePreferences(ctx context.Context, did syntax.DID, drop func(string) bool, add []prefs.Pref) error {
	return s.db.withTx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, "SELECT id, type FROM account_prefs WHERE did = ?", did.String())
		if err != nil {
			return fmt.Errorf("read preferences: %w", err)
		}
		var ids []int64
		for rows.Next() {
			var id int64
			var typ string
			if err := rows.Scan(&id, &typ); err != nil {
				rows.Close()
				return fmt.Errorf("read preference: %w", err)
			}
			if drop(typ) {
				ids = append(ids, id)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, id := range ids {
			if _, err := tx.ExecContext(ctx, "DELETE FROM account_prefs WHERE id = ?", id); err != nil {
				return fmt.Errorf("delete preference: %w", err)
			}
		}
		for _, p := range add {
			if _, err := tx.ExecContext(ctx, "INSERT INTO account_prefs (did, type, value_json) VALUES (?, ?, ?)", did.String(), p.Type, string(p.Value)); err != nil {
				return fmt.Errorf("insert preference: %w", err)
			}
		}
		return nil
	})
}

// CountPreferences implements prefs.Store.
func (s *PrefStore) CountPreferences(ctx context.Context, did syntax.DID) (int64, error) {
	var n int64
	if err := s.db.queryRow(ctx, "SELECT count(*) FROM account_prefs WHERE did = ?", did.String()).Scan(&n); err != nil {
		return 0, fmt.Errorf("count preferences: %w", err)
	}
	return n, nil
}
