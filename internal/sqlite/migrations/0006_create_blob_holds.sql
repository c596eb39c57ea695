-- Holds on blob collection: while a row here has not expired (expires_at,
-- unix milliseconds), the collector forgets no blob, so that a backup
-- copying the blobs its database snapshot lists never finds one deleted
-- under it. A backup inserts its hold before the snapshot, renews it while
-- copying and deletes it at the end; a crashed backup's hold just expires.
CREATE TABLE blob_holds (
	id         TEXT PRIMARY KEY,
	expires_at INTEGER NOT NULL
) WITHOUT ROWID;
