package sqlite

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
)

// Ensure migration 0007 moves every repository's commit block from
// repo_blocks into its root row, leaves record blocks where they are, and
// that the block is then read back as before.
func TestMigration0007_CommitIntoRoot(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "pds.sqlite")
	db, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	block := func(s string) (cid.Cid, []byte) {
		data := []byte{0xa1, 0x61, 0x76, 0x60 + byte(len(s))}
		data = append(data, s...)
		h, err := multihash.Sum(data, multihash.SHA2_256, -1)
		if err != nil {
			t.Fatal(err)
		}
		return cid.NewCidV1(cid.DagCBOR, h), data
	}
	// The schema as it was before 0007, with two repositories.
	for _, q := range []string{
		"ALTER TABLE repo_roots DROP COLUMN commit_data",
		"DELETE FROM schema_migrations WHERE name LIKE '%0007_%'",
	} {
		if _, err := db.write.ExecContext(ctx, q); err != nil {
			t.Fatal(q, err)
		}
	}
	type repoRows struct {
		did          string
		commit, rec  cid.Cid
		cdata, rdata []byte
	}
	var repos []repoRows
	for _, did := range []string{"did:plc:aaaa", "did:plc:bbbb"} {
		r := repoRows{did: did}
		r.commit, r.cdata = block("commit of " + did)
		r.rec, r.rdata = block("record of " + did)
		repos = append(repos, r)
		for _, q := range []struct {
			sql  string
			args []any
		}{
			{"INSERT INTO accounts (did, handle, created_at) VALUES (?, ?, '2026-01-01T00:00:00Z')", []any{did, did[8:] + ".test"}},
			{"INSERT INTO repo_roots (did, commit_cid, data_cid, rev) VALUES (?, ?, ?, '3jzfcijpj2z2a')", []any{did, r.commit.Bytes(), r.rec.Bytes()}},
			{"INSERT INTO repo_blocks (did, cid, rev, data) VALUES (?, ?, '3jzfcijpj2z2a', ?)", []any{did, r.commit.Bytes(), r.cdata}},
			{"INSERT INTO repo_blocks (did, cid, rev, data) VALUES (?, ?, '3jzfcijpj2z2a', ?)", []any{did, r.rec.Bytes(), r.rdata}},
		} {
			if _, err := db.write.ExecContext(ctx, q.sql, q.args...); err != nil {
				t.Fatal(q.sql, err)
			}
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	db, err = Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, r := range repos {
		var n int
		if err := db.read.QueryRowContext(ctx, "SELECT COUNT(*) FROM repo_blocks WHERE did = ?", r.did).Scan(&n); err != nil || n != 1 {
			t.Errorf("%s: %d rows left in repo_blocks (%v), want the record's only", r.did, n, err)
		}
		for _, b := range []struct {
			c    cid.Cid
			data []byte
		}{{r.commit, r.cdata}, {r.rec, r.rdata}} {
			got, err := db.Repos().Block(ctx, syntax.DID(r.did), b.c)
			if err != nil || !bytes.Equal(got, b.data) {
				t.Errorf("%s: block %s = %x, %v; want %x", r.did, b.c, got, err, b.data)
			}
		}
		if blocks, _, err := db.Repos().Stats(ctx, syntax.DID(r.did)); err != nil || blocks != 2 {
			t.Errorf("%s: Stats counts %d blocks (%v), want 2", r.did, blocks, err)
		}
	}
}
