package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"stratus/internal/auth"
)

// SessionStore implements auth.SessionStore.
type SessionStore struct{ db *DB }

// Sessions returns the session store of db.
func (db *DB) Sessions() *SessionStore { return &SessionStore{db: db} }

var _ auth.SessionStore = (*SessionStore)(nil)

const timeLayout = "2006-01-02T15:04:05.000Z"

// CreateAppPassword implements auth.SessionStore.
func (s *SessionStore) CreateAppPassword(ctx context.Context, ap auth.AppPassword) error {
	return s.db.withTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, "INSERT INTO app_passwords (did, name, password_hash, privileged, created_at) VALUES (?, ?, ?, ?, ?)",
			ap.DID.String(), ap.Name, ap.Hash, ap.Privileged, ap.CreatedAt.UTC().Format(timeLayout))
		if isUniqueViolation(err) {
			return auth.ErrDuplicate
		}
		if err != nil {
			return fmt.Errorf("insert app password: %w", err)
		}
		return nil
	})
}

// AppPasswords implements auth.SessionStore, newest first.
func (s *SessionStore) AppPasswords(ctx context.Context, did syntax.DID) ([]auth.AppPassword, error) {
	rows, err := s.db.query(ctx, "SELECT name, password_hash, privileged, created_at FROM app_passwords WHERE did = ? ORDER BY id DESC", did.String())
	if err != nil {
		return nil, fmt.Errorf("list app passwords: %w", err)
	}
	defer rows.Close()
	var out []auth.AppPassword
	for rows.Next() {
		ap := auth.AppPassword{DID: did}
		var created string
		if err := rows.Scan(&ap.Name, &ap.Hash, &ap.Privileged, &created); err != nil {
			return nil, fmt.Errorf("scan app password: %w", err)
		}
		ap.CreatedAt, _ = time.Parse(timeLayout, created)
		out = append(out, ap)
	}
	return out, rows.Err()
}

// AppPasswordByHash implements auth.SessionStore.
func (s *SessionStore) AppPasswordByHash(ctx context.Context, did syntax.DID, hash string) (auth.AppPassword, error) {
	ap := auth.AppPassword{DID: did, Hash: hash}
	var created string
	err := s.db.queryRow(ctx, "SELECT name, privileged, created_at FROM app_passwords WHERE did = ? AND password_hash = ?",
		did.String(), hash).Scan(&ap.Name, &ap.Privileged, &created)
	if isNoRows(err) {
		return ap, auth.ErrNotFound
	}
	if err != nil {
		return ap, fmt.Errorf("find app password: %w", err)
	}
	ap.CreatedAt, _ = time.Parse(timeLayout, created)
	return ap, nil
}

// liveSIDs returns the sessions among the given refresh-token condition
// that still have a usable (unexpired, unrotated) refresh token.
func liveSIDs(ctx context.Context, tx *sql.Tx, where string, now time.Time, args ...any) ([]string, error) {
	args = append(args, now.Unix())
	rows, err := tx.QueryContext(ctx, "SELECT DISTINCT sid FROM refresh_tokens WHERE "+where+" AND next_jti IS NULL AND expires_at > ?", args...)
	if err != nil {
		return nil, fmt.Errorf("find sessions: %w", err)
	}
	defer rows.Close()
	var sids []string
	for rows.Next() {
		var sid string
		if err := rows.Scan(&sid); err != nil {
			return nil, err
		}
		sids = append(sids, sid)
	}
	return sids, rows.Err()
}

func endSIDs(ctx context.Context, tx *sql.Tx, sids []string, until time.Time) error {
	for _, sid := range sids {
		if _, err := tx.ExecContext(ctx, "INSERT OR REPLACE INTO revoked_sessions (sid, expires_at) VALUES (?, ?)", sid, until.Unix()); err != nil {
			return fmt.Errorf("record ended session: %w", err)
		}
	}
	return nil
}

// DeleteAppPassword implements auth.SessionStore.
func (s *SessionStore) DeleteAppPassword(ctx context.Context, did syntax.DID, name string, now, until time.Time) ([]string, error) {
	var sids []string
	err := s.db.withTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, "DELETE FROM app_passwords WHERE did = ? AND name = ?", did.String(), name)
		if err != nil {
			return fmt.Errorf("delete app password: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return auth.ErrNotFound
		}
		if sids, err = liveSIDs(ctx, tx, "did = ? AND app_password_name = ?", now, did.String(), name); err != nil {
			return err
		}
		// Every session ever opened with the password is ended, not only
		// the live ones: their access tokens may still be unexpired.
		all, err := tx.QueryContext(ctx, "SELECT DISTINCT sid FROM refresh_tokens WHERE did = ? AND app_password_name = ?", did.String(), name)
		if err != nil {
			return fmt.Errorf("find sessions: %w", err)
		}
		var every []string
		for all.Next() {
			var sid string
			if err := all.Scan(&sid); err != nil {
				all.Close()
				return err
			}
			every = append(every, sid)
		}
		all.Close()
		if err := endSIDs(ctx, tx, every, until); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, "DELETE FROM refresh_tokens WHERE did = ? AND app_password_name = ?", did.String(), name)
		return err
	})
	return sids, err
}

// PutRefresh implements auth.SessionStore.
func (s *SessionStore) PutRefresh(ctx context.Context, t auth.RefreshToken) error {
	return s.db.withTx(ctx, func(tx *sql.Tx) error { return putRefresh(ctx, tx, t) })
}

// putRefresh stores a refresh token. A token of an app-password session is
// only stored while the app password exists, so a revocation that lands
// while a login with it is in progress cannot leave a session behind.
func putRefresh(ctx context.Context, tx *sql.Tx, t auth.RefreshToken) error {
	if t.AppPassword == "" {
		_, err := tx.ExecContext(ctx, `INSERT INTO refresh_tokens (jti, did, sid, app_password_name, privileged, expires_at)
			VALUES (?, ?, ?, NULL, ?, ?)`, t.JTI, t.DID.String(), t.SID, t.Privileged, t.ExpiresAt.Unix())
		if err != nil {
			return fmt.Errorf("insert refresh token: %w", err)
		}
		return nil
	}
	res, err := tx.ExecContext(ctx, `INSERT INTO refresh_tokens (jti, did, sid, app_password_name, privileged, expires_at)
		SELECT ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM app_passwords WHERE did = ? AND name = ?)`,
		t.JTI, t.DID.String(), t.SID, t.AppPassword, t.Privileged, t.ExpiresAt.Unix(), t.DID.String(), t.AppPassword)
	if err != nil {
		return fmt.Errorf("insert refresh token: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return auth.ErrRevoked
	}
	return nil
}

// GetRefresh implements auth.SessionStore.
func (s *SessionStore) GetRefresh(ctx context.Context, jti string) (auth.RefreshToken, error) {
	var t auth.RefreshToken
	var did string
	var ap, next sql.NullString
	var exp int64
	var rotated sql.NullInt64
	err := s.db.queryRow(ctx, `SELECT jti, did, sid, app_password_name, privileged, expires_at, next_jti, rotated_at
		FROM refresh_tokens WHERE jti = ?`, jti).Scan(&t.JTI, &did, &t.SID, &ap, &t.Privileged, &exp, &next, &rotated)
	if isNoRows(err) {
		return t, auth.ErrNotFound
	}
	if err != nil {
		return t, fmt.Errorf("read refresh token: %w", err)
	}
	t.DID, t.AppPassword, t.NextJTI = syntax.DID(did), ap.String, next.String
	t.ExpiresAt = time.Unix(exp, 0)
	if rotated.Valid {
		t.RotatedAt = time.Unix(rotated.Int64, 0)
	}
	return t, nil
}

// RotateRefresh implements auth.SessionStore.
func (s *SessionStore) RotateRefresh(ctx context.Context, oldJTI string, next auth.RefreshToken, at time.Time) error {
	return s.db.withTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, "UPDATE refresh_tokens SET next_jti = ?, rotated_at = ? WHERE jti = ? AND next_jti IS NULL",
			next.JTI, at.Unix(), oldJTI)
		if err != nil {
			return fmt.Errorf("rotate refresh token: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return auth.ErrNotFound
		}
		return putRefresh(ctx, tx, next)
	})
}

// EndSession implements auth.SessionStore.
func (s *SessionStore) EndSession(ctx context.Context, sid string, until time.Time) error {
	return s.db.withTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, "DELETE FROM refresh_tokens WHERE sid = ?", sid); err != nil {
			return fmt.Errorf("delete refresh tokens: %w", err)
		}
		return endSIDs(ctx, tx, []string{sid}, until)
	})
}

// EndAllSessions implements auth.SessionStore.
func (s *SessionStore) EndAllSessions(ctx context.Context, now, until time.Time) ([]string, error) {
	var sids []string
	err := s.db.withTx(ctx, func(tx *sql.Tx) error {
		var err error
		if sids, err = liveSIDs(ctx, tx, "1 = 1", now); err != nil {
			return err
		}
		if err := endSIDs(ctx, tx, sids, until); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, "DELETE FROM refresh_tokens")
		return err
	})
	return sids, err
}

// EndedSessions implements auth.SessionStore.
func (s *SessionStore) EndedSessions(ctx context.Context, now time.Time) (map[string]time.Time, error) {
	rows, err := s.db.query(ctx, "SELECT sid, expires_at FROM revoked_sessions WHERE expires_at > ?", now.Unix())
	if err != nil {
		return nil, fmt.Errorf("read ended sessions: %w", err)
	}
	defer rows.Close()
	out := map[string]time.Time{}
	for rows.Next() {
		var sid string
		var until int64
		if err := rows.Scan(&sid, &until); err != nil {
			return nil, err
		}
		out[sid] = time.Unix(until, 0)
	}
	return out, rows.Err()
}

// Prune implements auth.SessionStore. Rotated tokens are kept through the
// grace window so a retried refresh still finds its successor.
func (s *SessionStore) Prune(ctx context.Context, now time.Time) error {
	return s.db.withTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, "DELETE FROM refresh_tokens WHERE expires_at <= ? OR (rotated_at IS NOT NULL AND rotated_at <= ?)",
			now.Unix(), now.Add(-auth.RefreshGrace).Unix()); err != nil {
			return fmt.Errorf("prune refresh tokens: %w", err)
		}
		if _, err := tx.ExecContext(ctx, "DELETE FROM revoked_sessions WHERE expires_at <= ?", now.Unix()); err != nil {
			return fmt.Errorf("prune ended sessions: %w", err)
		}
		return nil
	})
}
