-- App passwords: named, individually revocable credentials. Only a hash is
-- kept; the password is shown once when created. The hash is scrypt with a
-- salt derived from the DID, so a login finds its app password with one
-- hash and one lookup instead of trying every stored hash (the passwords
-- carry 80 random bits, so a per-account salt loses nothing). id keeps
-- creation order.
CREATE TABLE app_passwords (
	id            INTEGER PRIMARY KEY AUTOINCREMENT,
	did           TEXT NOT NULL,
	name          TEXT NOT NULL,
	password_hash TEXT NOT NULL,
	privileged    INTEGER NOT NULL DEFAULT 0,
	created_at    TEXT NOT NULL,
	UNIQUE (did, name)
);
CREATE INDEX app_passwords_hash ON app_passwords (did, password_hash);

-- Refresh tokens, one row per issued token. A session (sid) is the chain of
-- tokens created by one login; rotation links each token to its successor
-- (next_jti) so that a client retrying a refresh within the grace window
-- gets the same successor back.
CREATE TABLE refresh_tokens (
	jti               TEXT PRIMARY KEY,
	did               TEXT NOT NULL,
	sid               TEXT NOT NULL,
	app_password_name TEXT,
	privileged        INTEGER NOT NULL DEFAULT 0,
	expires_at        INTEGER NOT NULL, -- unix seconds
	next_jti          TEXT,
	rotated_at        INTEGER           -- unix seconds
) WITHOUT ROWID;
CREATE INDEX refresh_tokens_sid ON refresh_tokens (sid);
CREATE INDEX refresh_tokens_app_password ON refresh_tokens (did, app_password_name);

-- Sessions ended before their access tokens expire (logout, app password
-- revoked). Access tokens are checked against this list in memory; rows are
-- kept until the longest-lived access token of the session has expired.
CREATE TABLE revoked_sessions (
	sid        TEXT PRIMARY KEY,
	expires_at INTEGER NOT NULL -- unix seconds
) WITHOUT ROWID;
