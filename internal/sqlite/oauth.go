package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"stratus/internal/oauth"
)

// OAuthStore implements oauth.Store.
type OAuthStore struct{ db *DB }

// OAuth returns the OAuth store of db.
func (db *DB) OAuth() *OAuthStore { return &OAuthStore{db: db} }

var _ oauth.Store = (*OAuthStore)(nil)

func unix(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.Unix()
}

func fromUnix(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(n, 0)
}

// PutRequest implements oauth.Store.
func (s *OAuthStore) PutRequest(ctx context.Context, r oauth.Request) error {
	return s.db.withTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO oauth_requests (id, client_id, redirect_uri, scope, state, code_challenge,
			login_hint, prompt, response_mode, dpop_jkt, client_kid, created_at, expires_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)`,
			r.ID, r.ClientID, r.RedirectURI, r.Scope, r.State, r.CodeChallenge, r.LoginHint, r.Prompt, r.ResponseMode,
			r.DPoPJKT, r.ClientKID, unix(r.CreatedAt), unix(r.ExpiresAt))
		if err != nil {
			return fmt.Errorf("insert oauth request: %w", err)
		}
		return nil
	})
}

const requestColumns = `id, client_id, redirect_uri, scope, state, code_challenge, login_hint, prompt, response_mode,
	dpop_jkt, client_kid, COALESCE(code_hash, ''), COALESCE(did, ''), created_at, expires_at`

func scanRequest(row rowScanner) (oauth.Request, error) {
	var r oauth.Request
	var did string
	var created, exp int64
	err := row.Scan(&r.ID, &r.ClientID, &r.RedirectURI, &r.Scope, &r.State, &r.CodeChallenge, &r.LoginHint, &r.Prompt,
		&r.ResponseMode, &r.DPoPJKT, &r.ClientKID, &r.CodeHash, &did, &created, &exp)
	if isNoRows(err) {
		return r, oauth.ErrNotFound
	}
	if err != nil {
		return r, fmt.Errorf("read oauth request: %w", err)
	}
	r.DID, r.CreatedAt, r.ExpiresAt = syntax.DID(did), fromUnix(created), fromUnix(exp)
	return r, nil
}

// GetRequest implements oauth.Store.
func (s *OAuthStore) GetRequest(ctx context.Context, id string) (oauth.Request, error) {
	return scanRequest(s.db.queryRow(ctx, "SELECT "+requestColumns+" FROM oauth_requests WHERE id = ?", id))
}

func affected(res sql.Result, err error) error {
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return oauth.ErrNotFound
	}
	return nil
}

// ExtendRequest implements oauth.Store.
func (s *OAuthStore) ExtendRequest(ctx context.Context, id string, exp time.Time) error {
	return s.db.withTx(ctx, func(tx *sql.Tx) error {
		return affected(tx.ExecContext(ctx, "UPDATE oauth_requests SET expires_at = ? WHERE id = ? AND code_hash IS NULL", exp.Unix(), id))
	})
}

// DeleteRequest implements oauth.Store.
func (s *OAuthStore) DeleteRequest(ctx context.Context, id string) error {
	return s.db.withTx(ctx, func(tx *sql.Tx) error {
		return affected(tx.ExecContext(ctx, "DELETE FROM oauth_requests WHERE id = ?", id))
	})
}

// ApproveRequest implements oauth.Store.
func (s *OAuthStore) ApproveRequest(ctx context.Context, id, codeHash string, did syntax.DID, exp time.Time) error {
	return s.db.withTx(ctx, func(tx *sql.Tx) error {
		return affected(tx.ExecContext(ctx, "UPDATE oauth_requests SET code_hash = ?, did = ?, expires_at = ? WHERE id = ? AND code_hash IS NULL",
			codeHash, did.String(), exp.Unix(), id))
	})
}

// ConsumeCode implements oauth.Store.
func (s *OAuthStore) ConsumeCode(ctx context.Context, codeHash string) (oauth.Request, error) {
	var r oauth.Request
	err := s.db.withTx(ctx, func(tx *sql.Tx) error {
		var err error
		r, err = scanRequest(tx.QueryRowContext(ctx, "DELETE FROM oauth_requests WHERE code_hash = ? RETURNING "+requestColumns, codeHash))
		return err
	})
	return r, err
}

// ChallengeUsed implements oauth.Store.
func (s *OAuthStore) ChallengeUsed(ctx context.Context, challenge string, since time.Time) (bool, error) {
	var n int
	err := s.db.queryRow(ctx, `SELECT (SELECT COUNT(*) FROM oauth_requests WHERE code_challenge = ?)
		+ (SELECT COUNT(*) FROM oauth_grants WHERE code_challenge = ? AND created_at >= ?)`, challenge, challenge, since.Unix()).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("check code challenge: %w", err)
	}
	return n > 0, nil
}

// CreateGrant implements oauth.Store.
func (s *OAuthStore) CreateGrant(ctx context.Context, g oauth.Grant) error {
	return s.db.withTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO oauth_grants (id, did, client_id, client_name, scope, dpop_jkt, auth_method,
			client_kid, code_hash, code_challenge, access_hash, access_expires_at, refresh_hash, refresh_expires_at, expires_at,
			created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
			g.ID, g.DID.String(), g.ClientID, g.ClientName, g.Scope, g.DPoPJKT, g.AuthMethod, g.ClientKID, g.CodeHash,
			g.CodeChallenge, g.AccessHash, unix(g.AccessExpiresAt), nullable(g.RefreshHash), unix(g.RefreshExpiresAt),
			unix(g.ExpiresAt), unix(g.CreatedAt), unix(g.UpdatedAt))
		if err != nil {
			return fmt.Errorf("insert oauth grant: %w", err)
		}
		return nil
	})
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

const grantColumns = `id, did, client_id, client_name, scope, dpop_jkt, auth_method, client_kid, code_hash, code_challenge,
	access_hash, access_expires_at, COALESCE(refresh_hash, ''), refresh_expires_at, expires_at, created_at, updated_at`

func scanGrant(row rowScanner) (oauth.Grant, error) {
	var g oauth.Grant
	var did string
	var accessExp, refreshExp, exp, created, updated int64
	err := row.Scan(&g.ID, &did, &g.ClientID, &g.ClientName, &g.Scope, &g.DPoPJKT, &g.AuthMethod, &g.ClientKID, &g.CodeHash,
		&g.CodeChallenge, &g.AccessHash, &accessExp, &g.RefreshHash, &refreshExp, &exp, &created, &updated)
	if isNoRows(err) {
		return g, oauth.ErrNotFound
	}
	if err != nil {
		return g, fmt.Errorf("read oauth grant: %w", err)
	}
	g.DID = syntax.DID(did)
	g.AccessExpiresAt, g.RefreshExpiresAt, g.ExpiresAt = fromUnix(accessExp), fromUnix(refreshExp), fromUnix(exp)
	g.CreatedAt, g.UpdatedAt = fromUnix(created), fromUnix(updated)
	return g, nil
}

// GrantByAccess implements oauth.Store.
func (s *OAuthStore) GrantByAccess(ctx context.Context, hash string) (oauth.Grant, error) {
	return scanGrant(s.db.queryRow(ctx, "SELECT "+grantColumns+" FROM oauth_grants WHERE access_hash = ?", hash))
}

// GrantByRefresh implements oauth.Store.
func (s *OAuthStore) GrantByRefresh(ctx context.Context, hash string) (oauth.Grant, error) {
	return scanGrant(s.db.queryRow(ctx, "SELECT "+grantColumns+" FROM oauth_grants WHERE refresh_hash = ?", hash))
}

// GrantByCode implements oauth.Store.
func (s *OAuthStore) GrantByCode(ctx context.Context, codeHash string) (oauth.Grant, error) {
	return scanGrant(s.db.queryRow(ctx, "SELECT "+grantColumns+" FROM oauth_grants WHERE code_hash = ?", codeHash))
}

// RetiredRefresh implements oauth.Store.
func (s *OAuthStore) RetiredRefresh(ctx context.Context, hash string) (string, error) {
	var id string
	err := s.db.queryRow(ctx, "SELECT grant_id FROM oauth_retired_refresh WHERE hash = ?", hash).Scan(&id)
	if isNoRows(err) {
		return "", oauth.ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("read retired refresh token: %w", err)
	}
	return id, nil
}

// RotateGrant implements oauth.Store.
func (s *OAuthStore) RotateGrant(ctx context.Context, g oauth.Grant, oldRefresh string) error {
	return s.db.withTx(ctx, func(tx *sql.Tx) error {
		err := affected(tx.ExecContext(ctx, `UPDATE oauth_grants SET access_hash = ?, access_expires_at = ?, refresh_hash = ?,
			refresh_expires_at = ?, updated_at = ? WHERE id = ? AND refresh_hash = ?`,
			g.AccessHash, unix(g.AccessExpiresAt), nullable(g.RefreshHash), unix(g.RefreshExpiresAt), unix(g.UpdatedAt), g.ID, oldRefresh))
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO oauth_retired_refresh (hash, grant_id) VALUES (?, ?)", oldRefresh, g.ID); err != nil {
			return fmt.Errorf("retire refresh token: %w", err)
		}
		return nil
	})
}

// DeleteGrant implements oauth.Store.
func (s *OAuthStore) DeleteGrant(ctx context.Context, id string) error {
	return s.db.withTx(ctx, func(tx *sql.Tx) error {
		return affected(tx.ExecContext(ctx, "DELETE FROM oauth_grants WHERE id = ?", id))
	})
}

// Grants implements oauth.Store.
func (s *OAuthStore) Grants(ctx context.Context, now time.Time) ([]oauth.Grant, error) {
	rows, err := s.db.query(ctx, "SELECT "+grantColumns+` FROM oauth_grants
		WHERE (expires_at = 0 OR expires_at > ?) AND (access_expires_at > ? OR refresh_expires_at > ?)
		ORDER BY created_at DESC, id`, now.Unix(), now.Unix(), now.Unix())
	if err != nil {
		return nil, fmt.Errorf("list oauth grants: %w", err)
	}
	defer rows.Close()
	var out []oauth.Grant
	for rows.Next() {
		g, err := scanGrant(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, g)
	}
	return out, rows.Err()
}

// Prune implements oauth.Store.
func (s *OAuthStore) Prune(ctx context.Context, now time.Time) error {
	return s.db.withTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, "DELETE FROM oauth_requests WHERE expires_at <= ?", now.Unix()); err != nil {
			return fmt.Errorf("prune oauth requests: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM oauth_grants WHERE (expires_at != 0 AND expires_at <= ?)
			OR (access_expires_at <= ? AND refresh_expires_at <= ?)`, now.Unix(), now.Unix(), now.Unix()); err != nil {
			return fmt.Errorf("prune oauth grants: %w", err)
		}
		return nil
	})
}
