-- Accounts hosted on this server. Everything below is keyed by DID so that
-- hosting several accounts needs no schema change.
CREATE TABLE accounts (
	did        TEXT PRIMARY KEY,
	handle     TEXT NOT NULL UNIQUE COLLATE NOCASE,
	email      TEXT NOT NULL DEFAULT '',
	status     TEXT NOT NULL DEFAULT 'active', -- active | deactivated | takendown
	created_at TEXT NOT NULL
) WITHOUT ROWID;

-- The current signed commit of each repository.
CREATE TABLE repo_roots (
	did        TEXT PRIMARY KEY REFERENCES accounts(did),
	commit_cid BLOB NOT NULL,
	data_cid   BLOB NOT NULL,
	rev        TEXT NOT NULL
) WITHOUT ROWID;

-- Blocks reachable from the current commit: the commit, MST nodes and
-- records. Unreachable blocks are deleted in the transaction that makes
-- them unreachable, so this table is always exactly the current tree.
CREATE TABLE repo_blocks (
	did  TEXT NOT NULL,
	cid  BLOB NOT NULL,
	rev  TEXT NOT NULL,
	data BLOB NOT NULL,
	PRIMARY KEY (did, cid)
) WITHOUT ROWID;

-- Index of the records in the current tree, for reads and listings that
-- should not walk the MST.
CREATE TABLE records (
	did        TEXT NOT NULL,
	collection TEXT NOT NULL,
	rkey       TEXT NOT NULL,
	cid        BLOB NOT NULL,
	rev        TEXT NOT NULL,
	PRIMARY KEY (did, collection, rkey)
) WITHOUT ROWID;
CREATE INDEX records_cid ON records (did, cid);

-- The durable event log behind com.atproto.sync.subscribeRepos. Events are
-- written in the same transaction as the change they describe; payload is
-- the DAG-CBOR body without its seq, which is added when the event is read.
-- Pruning by age walks from the lowest seq, since seq order is time order,
-- so created_at needs no index.
CREATE TABLE firehose_events (
	seq        INTEGER PRIMARY KEY AUTOINCREMENT,
	did        TEXT NOT NULL,
	type       TEXT NOT NULL, -- commit | sync | identity | account
	payload    BLOB NOT NULL,
	created_at TEXT NOT NULL
);
