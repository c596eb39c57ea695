-- OAuth authorization server state. Tokens and codes are stored as SHA-256
-- hashes only. Times are unix seconds.

-- Pushed authorization requests; an approved one holds its code until the
-- code is exchanged (the row is then deleted).
CREATE TABLE oauth_requests (
	id             TEXT PRIMARY KEY,
	client_id      TEXT NOT NULL,
	redirect_uri   TEXT NOT NULL,
	scope          TEXT NOT NULL,
	state          TEXT NOT NULL,
	code_challenge TEXT NOT NULL,
	login_hint     TEXT NOT NULL DEFAULT '',
	prompt         TEXT NOT NULL DEFAULT '',
	response_mode  TEXT NOT NULL DEFAULT '',
	dpop_jkt       TEXT NOT NULL,
	client_kid     TEXT NOT NULL DEFAULT '',
	code_hash      TEXT UNIQUE,
	did            TEXT,
	created_at     INTEGER NOT NULL,
	expires_at     INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX oauth_requests_challenge ON oauth_requests (code_challenge);

-- Grants (OAuth sessions) with their current tokens.
CREATE TABLE oauth_grants (
	id                 TEXT PRIMARY KEY,
	did                TEXT NOT NULL,
	client_id          TEXT NOT NULL,
	client_name        TEXT NOT NULL,
	scope              TEXT NOT NULL,
	dpop_jkt           TEXT NOT NULL,
	auth_method        TEXT NOT NULL,
	client_kid         TEXT NOT NULL DEFAULT '',
	code_hash          TEXT NOT NULL UNIQUE,
	code_challenge     TEXT NOT NULL,
	access_hash        TEXT NOT NULL UNIQUE,
	access_expires_at  INTEGER NOT NULL,
	refresh_hash       TEXT UNIQUE,
	refresh_expires_at INTEGER NOT NULL DEFAULT 0,
	expires_at         INTEGER NOT NULL DEFAULT 0, -- 0: no session limit
	created_at         INTEGER NOT NULL,
	updated_at         INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX oauth_grants_challenge ON oauth_grants (code_challenge, created_at);

-- Refresh tokens already rotated away: presenting one again revokes its
-- grant (refresh token re-use detection). Rows go with their grant.
CREATE TABLE oauth_retired_refresh (
	hash     TEXT PRIMARY KEY,
	grant_id TEXT NOT NULL REFERENCES oauth_grants (id) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX oauth_retired_refresh_grant ON oauth_retired_refresh (grant_id);
