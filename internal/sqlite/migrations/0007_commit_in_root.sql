-- The signed commit block moves from repo_blocks into its repository's
-- root row. A commit replaces the previous one on every write; in
-- repo_blocks that cost an insert and a delete at two random places of
-- the largest B-tree (two more pages written and fsynced per commit),
-- while the root row is rewritten by every commit anyway.
ALTER TABLE repo_roots ADD COLUMN commit_data BLOB;

UPDATE repo_roots SET commit_data = (
	SELECT b.data FROM repo_blocks b
	WHERE b.did = repo_roots.did AND b.cid = repo_roots.commit_cid
);

DELETE FROM repo_blocks WHERE (did, cid) IN (SELECT did, commit_cid FROM repo_roots);
