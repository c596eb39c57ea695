-- Blobs held for each account. The bytes live in the blob store under
-- <did>/<cid>; a row is written only after the bytes are stored, and the
-- collector deletes the row before the bytes, so a row always has its
-- bytes. unreferenced_at (unix milliseconds) is when the blob last had no
-- record referencing it (its upload, for a blob never referenced), NULL
-- while records reference it; blobs unreferenced for longer than the TTL
-- are collected.
CREATE TABLE blobs (
	did             TEXT NOT NULL,
	cid             TEXT NOT NULL,
	mime_type       TEXT NOT NULL,
	size            INTEGER NOT NULL,
	created_at      TEXT NOT NULL,
	unreferenced_at INTEGER,
	PRIMARY KEY (did, cid)
) WITHOUT ROWID;
CREATE INDEX blobs_unreferenced ON blobs (unreferenced_at) WHERE unreferenced_at IS NOT NULL;

-- Which records reference which blobs, written in the transaction of the
-- commit that writes the record. A reference whose blob has no row in
-- blobs is a missing blob, possible only after a repository import. rev is
-- the revision of the commit that wrote the record (listBlobs since).
CREATE TABLE blob_refs (
	did        TEXT NOT NULL,
	collection TEXT NOT NULL,
	rkey       TEXT NOT NULL,
	cid        TEXT NOT NULL,
	rev        TEXT NOT NULL,
	PRIMARY KEY (did, collection, rkey, cid)
) WITHOUT ROWID;
CREATE INDEX blob_refs_cid ON blob_refs (did, cid);
