package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"stratus/internal/integrity"
)

var _ integrity.Fixer = (*Inspector)(nil)

// Inspector reads the database inside one transaction, so that every
// check sees a single consistent state even while a server writes: WAL
// lets a read transaction keep its snapshot while commits continue. A
// repairing inspector holds the write lock instead, and its changes land
// together when Commit is called.
//
// It opens the file itself, without migrating or creating anything, so it
// can look at a database that a running server has open, or at one too
// damaged to migrate.
type Inspector struct {
	db *sql.DB
	tx *sql.Tx
}

// ErrNoDatabase is returned by Inspect when there is no database file.
var ErrNoDatabase = errors.New("no database file")

// Inspect opens the database at path and begins a read transaction, or a
// write transaction when write is set. Close (or Commit) ends it.
func Inspect(ctx context.Context, path string, write bool) (*Inspector, error) {
	if _, err := os.Stat(path); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%w at %s", ErrNoDatabase, path)
		}
		return nil, err
	}
	q := url.Values{}
	q.Set("mode", "rw") // never create
	q.Add("_pragma", "busy_timeout(10000)")
	if write {
		q.Add("_pragma", "synchronous(FULL)")
		q.Set("_txlock", "immediate")
	} else {
		q.Add("_pragma", "query_only(1)")
	}
	db, err := sql.Open("sqlite", "file:"+filepath.ToSlash(path)+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("open db: %w", err)
	}
	db.SetMaxOpenConns(1)
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("begin: %w", err)
	}
	// The snapshot starts at the first read; take it now.
	var n int
	if err := tx.QueryRowContext(ctx, "SELECT COUNT(*) FROM sqlite_master").Scan(&n); err != nil {
		tx.Rollback()
		db.Close()
		return nil, fmt.Errorf("read schema: %w", err)
	}
	return &Inspector{db: db, tx: tx}, nil
}

// Close ends the transaction without keeping changes and closes the file.
func (in *Inspector) Close() error {
	in.tx.Rollback()
	return in.db.Close()
}

// Commit keeps the changes of a repairing inspector and closes it.
func (in *Inspector) Commit() error {
	err := in.tx.Commit()
	if e := in.db.Close(); err == nil {
		err = e
	}
	return err
}

var treePage = regexp.MustCompile(`^Tree (\d+) page (\d+)`)

// IntegrityCheck runs PRAGMA integrity_check and returns its complaints
// (none when the file is sound), naming the table or index of each damaged
// b-tree when SQLite gives its root page.
func (in *Inspector) IntegrityCheck(ctx context.Context) ([]string, error) {
	rows, err := in.tx.QueryContext(ctx, "PRAGMA integrity_check")
	if err != nil {
		return nil, err
	}
	var out []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			rows.Close()
			return nil, err
		}
		// The driver may return several complaints in one row.
		for _, l := range strings.Split(line, "\n") {
			if l = strings.TrimSpace(l); l != "" && l != "ok" && !strings.HasPrefix(l, "*** in database") {
				out = append(out, l)
			}
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return out, err
	}
	names := map[int]string{}
	if r, err := in.tx.QueryContext(ctx, "SELECT type, name, rootpage FROM sqlite_master WHERE rootpage > 0"); err == nil {
		for r.Next() {
			var typ, name string
			var root int
			if r.Scan(&typ, &name, &root) == nil {
				names[root] = typ + " " + name
			}
		}
		r.Close()
	}
	for i, line := range out {
		if m := treePage.FindStringSubmatch(line); m != nil {
			root, _ := strconv.Atoi(m[1])
			if n, ok := names[root]; ok {
				out[i] = line + " (" + n + ")"
			}
		}
	}
	if len(out) > maxComplaints {
		out = append(out[:maxComplaints], fmt.Sprintf("... and %d more complaints", len(out)-maxComplaints))
	}
	return out, nil
}

// maxComplaints bounds the integrity_check lines reported.
const maxComplaints = 40

// Accounts lists every account.
func (in *Inspector) Accounts(ctx context.Context) ([]integrity.Account, error) {
	rows, err := in.tx.QueryContext(ctx, "SELECT did, status FROM accounts ORDER BY did")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []integrity.Account
	for rows.Next() {
		var a integrity.Account
		if err := rows.Scan(&a.DID, &a.Status); err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// Head returns the stored root of did's repository (raw CID bytes, so
// damaged values can be reported); ok is false when there is none.
func (in *Inspector) Head(ctx context.Context, did string) (h integrity.HeadRow, ok bool, err error) {
	err = in.tx.QueryRowContext(ctx, "SELECT commit_cid, data_cid, rev FROM repo_roots WHERE did = ?", did).Scan(&h.Commit, &h.Data, &h.Rev)
	if isNoRows(err) {
		return h, false, nil
	}
	return h, err == nil, err
}

// Block returns one stored block; ok is false when it is absent.
func (in *Inspector) Block(ctx context.Context, did string, cid []byte) (data []byte, ok bool, err error) {
	err = in.tx.QueryRowContext(ctx, sqlBlock, did, cid).Scan(&data)
	if isNoRows(err) {
		return nil, false, nil
	}
	return data, err == nil, err
}

// EachBlock calls fn for every stored block of did.
func (in *Inspector) EachBlock(ctx context.Context, did string, fn func(cid []byte, rev string, data []byte) error) error {
	rows, err := in.tx.QueryContext(ctx, `SELECT cid, rev, data FROM repo_blocks WHERE did = ?1
		UNION ALL SELECT commit_cid, rev, commit_data FROM repo_roots WHERE did = ?1 AND commit_data IS NOT NULL`, did)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var c, data []byte
		var rev string
		if err := rows.Scan(&c, &rev, &data); err != nil {
			return err
		}
		if err := fn(c, rev, data); err != nil {
			return err
		}
	}
	return rows.Err()
}

// EachRecord calls fn for every row of did's record index, in key order.
func (in *Inspector) EachRecord(ctx context.Context, did string, fn func(collection, rkey string, cid []byte, rev string) error) error {
	rows, err := in.tx.QueryContext(ctx, "SELECT collection, rkey, cid, rev FROM records WHERE did = ? ORDER BY collection, rkey", did)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var coll, rkey, rev string
		var c []byte
		if err := rows.Scan(&coll, &rkey, &c, &rev); err != nil {
			return err
		}
		if err := fn(coll, rkey, c, rev); err != nil {
			return err
		}
	}
	return rows.Err()
}

// EachEvent calls fn for every retained firehose event, in seq order.
func (in *Inspector) EachEvent(ctx context.Context, fn func(seq int64, did, typ string, payload []byte) error) error {
	rows, err := in.tx.QueryContext(ctx, "SELECT seq, did, type, payload FROM firehose_events ORDER BY seq")
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var seq int64
		var did, typ string
		var p []byte
		if err := rows.Scan(&seq, &did, &typ, &p); err != nil {
			return err
		}
		if err := fn(seq, did, typ, p); err != nil {
			return err
		}
	}
	return rows.Err()
}

// SeqCounter returns the firehose sequence counter (the highest seq ever
// handed out, kept by AUTOINCREMENT even after pruning); 0 before the
// first event.
func (in *Inspector) SeqCounter(ctx context.Context) (int64, error) {
	var n int64
	err := in.tx.QueryRowContext(ctx, "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'firehose_events'), 0)").Scan(&n)
	return n, err
}

// SessionProblems checks the credential tables for states that no
// complete transaction leaves behind: a refresh token of an app password
// that no longer exists (a half-applied revocation), tokens or app
// passwords of unknown accounts, empty password hashes, broken rotation
// links.
func (in *Inspector) SessionProblems(ctx context.Context) ([]string, error) {
	checks := []struct{ q, msg string }{
		{`SELECT jti FROM refresh_tokens t WHERE app_password_name IS NOT NULL
			AND NOT EXISTS (SELECT 1 FROM app_passwords a WHERE a.did = t.did AND a.name = t.app_password_name)`,
			"refresh token %s belongs to an app password that no longer exists (revocation incomplete)"},
		{`SELECT jti FROM refresh_tokens t WHERE NOT EXISTS (SELECT 1 FROM accounts a WHERE a.did = t.did)`,
			"refresh token %s belongs to an unknown account"},
		{`SELECT name FROM app_passwords p WHERE NOT EXISTS (SELECT 1 FROM accounts a WHERE a.did = p.did)`,
			"app password %q belongs to an unknown account"},
		{`SELECT name FROM app_passwords WHERE password_hash = '' OR name = ''`,
			"app password %q has an empty name or hash"},
		{`SELECT jti FROM refresh_tokens WHERE next_jti IS NOT NULL AND rotated_at IS NULL`,
			"refresh token %s has a successor but no rotation time"},
	}
	var out []string
	for _, c := range checks {
		rows, err := in.tx.QueryContext(ctx, c.q)
		if err != nil {
			return out, err
		}
		for rows.Next() {
			var v string
			if err := rows.Scan(&v); err != nil {
				rows.Close()
				return out, err
			}
			out = append(out, fmt.Sprintf(c.msg, v))
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return out, err
		}
	}
	return out, nil
}

// PutRecord sets one row of did's record index (repairs only).
func (in *Inspector) PutRecord(ctx context.Context, did, collection, rkey string, cid []byte, rev string) error {
	_, err := in.tx.ExecContext(ctx, `INSERT INTO records (did, collection, rkey, cid, rev) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (did, collection, rkey) DO UPDATE SET cid = excluded.cid, rev = excluded.rev`, did, collection, rkey, cid, rev)
	return err
}

// DeleteRecord removes one row of did's record index (repairs only).
func (in *Inspector) DeleteRecord(ctx context.Context, did, collection, rkey string) error {
	_, err := in.tx.ExecContext(ctx, "DELETE FROM records WHERE did = ? AND collection = ? AND rkey = ?", did, collection, rkey)
	return err
}

// PutBlock stores a block unless it is already there (repairs only); the
// current commit goes to its root row.
func (in *Inspector) PutBlock(ctx context.Context, did string, cid []byte, rev string, data []byte) error {
	res, err := in.tx.ExecContext(ctx, "UPDATE repo_roots SET commit_data = COALESCE(commit_data, ?3) WHERE did = ?1 AND commit_cid = ?2", did, cid, data)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil || n > 0 {
		return err
	}
	_, err = in.tx.ExecContext(ctx, "INSERT OR IGNORE INTO repo_blocks (did, cid, rev, data) VALUES (?, ?, ?, ?)", did, cid, rev, data)
	return err
}

// DeleteBlock removes a stored block (repairs only), the current commit's
// included.
func (in *Inspector) DeleteBlock(ctx context.Context, did string, cid []byte) error {
	if _, err := in.tx.ExecContext(ctx, "UPDATE repo_roots SET commit_data = NULL WHERE did = ? AND commit_cid = ?", did, cid); err != nil {
		return err
	}
	_, err := in.tx.ExecContext(ctx, "DELETE FROM repo_blocks WHERE did = ? AND cid = ?", did, cid)
	return err
}

// DeleteSessionOrphans removes refresh tokens whose app password or
// account no longer exists, finishing an interrupted revocation (repairs
// only). The sessions they belonged to are also recorded as ended, so
// their access tokens stop working too.
func (in *Inspector) DeleteSessionOrphans(ctx context.Context, until time.Time) (int64, error) {
	where := `(app_password_name IS NOT NULL AND NOT EXISTS (SELECT 1 FROM app_passwords a WHERE a.did = t.did AND a.name = t.app_password_name))
		OR NOT EXISTS (SELECT 1 FROM accounts a WHERE a.did = t.did)`
	if _, err := in.tx.ExecContext(ctx, `INSERT OR REPLACE INTO revoked_sessions (sid, expires_at)
		SELECT DISTINCT sid, ? FROM refresh_tokens t WHERE `+where, until.Unix()); err != nil {
		return 0, err
	}
	res, err := in.tx.ExecContext(ctx, "DELETE FROM refresh_tokens AS t WHERE "+where)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}
