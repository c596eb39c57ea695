// Package sqlite is the only importer of the SQLite driver. It opens the
// database with the pragmas the server depends on, runs the embedded
// numbered migrations, and implements the Store interfaces that the domain
// packages declare.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	_ "modernc.org/sqlite" // registers the pure-Go "sqlite" driver

	"stratus/internal/sequencer"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// DB is an open database: one connection for writes (SQLite allows one
// writer at a time, and a single pooled connection turns lock contention
// into Go-side queuing instead of SQLITE_BUSY) and a pool for reads, which
// WAL lets run concurrently with the writer.
type DB struct {
	write *sql.DB
	read  *sql.DB
	path  string

	// ckpt is the background checkpointer's own connection; see
	// checkpointer.
	ckpt     *sql.DB
	commits  atomic.Int64 // write transactions committed
	ckptKick chan struct{}
	ckptStop chan struct{}
	ckptDone chan struct{}

	// Now is the clock used for timestamps; tests may replace it.
	Now func() time.Time

	// stmts holds the statements prepared on the write connection; it is
	// filled once in Open and only read afterwards.
	stmts map[string]*sql.Stmt

	// onEvents is called after a transaction that appended firehose events
	// commits; see OnEvents.
	onEvents atomic.Pointer[func([]sequencer.Stored)]
	// txEvents are the events appended by the write transaction in
	// progress (there is one write connection, so at most one).
	txEvents []sequencer.Stored

	// readStmts caches statements prepared on the read pool, where
	// compiling SQL would otherwise dominate the cost of a point query.
	readMu    sync.Mutex
	readStmts map[string]*sql.Stmt
}

// readCacheKiB is the page cache of each read connection. Point reads
// need only the upper levels of a few B-trees; everything else comes from
// the kernel's page cache at the cost of a copy. The pure-Go allocator
// gives each cached page (4 KiB and SQLite's header) an 8 KiB slot, so a
// full cache is resident at about twice this size. Halving it took about
// 2 MB off per connection but cost 10% more server CPU per getRecord over
// a 10,000-record repository: the misses are system calls.
const readCacheKiB = 2000

// writeCacheKiB is the page cache of the write connection, resident at
// about twice this size as for readCacheKiB. A commit touches a few pages
// of each index; with 16 MB instead, the cache held the whole database of
// a 10,000-record repository (25 MB more resident) and commits were no
// faster, since the fsync dominates them and a miss costs only a copy
// from the kernel's page cache; nor were they with 4,000 KiB, against
// this.
const writeCacheKiB = 2000

// DefaultReadConns is how many read connections the pool opens at most.
// Each holds its own page cache and SQLite's per-connection memory, which
// the pure-Go C runtime keeps mapped once allocated, so every connection
// adds to the resident memory for good. With two to four cores more
// connections do not make reads faster: a point query holds its
// connection for a few microseconds, so four serve eight busy readers.
const DefaultReadConns = 4

// Checkpoints (copying the WAL back into the database file) run on a
// connection of their own, in the background, instead of inside whichever
// commit crosses SQLite's threshold: that commit would otherwise wait for
// the copy and an fsync of the database file. checkpointEvery commits, and
// after checkpointIdle without one, a passive checkpoint runs beside the
// writes. The write connection keeps an automatic checkpoint at
// autoCheckpointPages, so the WAL stays bounded should the background one
// fall behind.
const (
	checkpointEvery     = 100
	checkpointIdle      = time.Second
	autoCheckpointPages = 10000
)

// Options tune how the database is opened.
type Options struct {
	// RelaxedSync stops fsyncing the WAL on every commit
	// (synchronous=NORMAL). Commits then survive a crash of the process,
	// but the newest ones can be lost to a power failure or kernel crash;
	// the database stays consistent either way.
	RelaxedSync bool

	// ReadConns caps the read connections (0: DefaultReadConns).
	ReadConns int
}

// Open opens (creating if needed) the database file at path with every
// commit fsynced, and migrates it to the latest schema.
func Open(ctx context.Context, path string) (*DB, error) {
	return OpenWith(ctx, path, Options{})
}

// OpenWith is Open with options.
func OpenWith(ctx context.Context, path string, opts Options) (*DB, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create db dir: %w", err)
	}
	// busy_timeout comes first so that the journal_mode change itself waits
	// for other processes instead of failing. synchronous(FULL) makes every
	// acknowledged commit durable across power loss, so a firehose seq that
	// was sent is never reused.
	sync := "synchronous(FULL)"
	if opts.RelaxedSync {
		sync = "synchronous(NORMAL)"
	}
	pragmas := []string{
		"busy_timeout(10000)",
		"journal_mode(WAL)",
		sync,
		"foreign_keys(1)",
		"temp_store(MEMORY)",
	}
	q := url.Values{}
	for _, p := range pragmas {
		q.Add("_pragma", p)
	}
	base := "file:" + filepath.ToSlash(path)
	wq := url.Values{}
	for k, v := range q {
		wq[k] = v
	}
	wq.Set("_txlock", "immediate")
	// Every connection gets a small page cache: the kernel's page cache
	// already holds the file once for all, and memory SQLite allocates
	// stays resident (see DefaultReadConns).
	wq.Add("_pragma", fmt.Sprintf("cache_size(-%d)", writeCacheKiB))
	wq.Add("_pragma", fmt.Sprintf("wal_autocheckpoint(%d)", autoCheckpointPages))
	write, err := sql.Open("sqlite", base+"?"+wq.Encode())
	if err != nil {
		return nil, fmt.Errorf("open db: %w", err)
	}
	write.SetMaxOpenConns(1)
	write.SetConnMaxIdleTime(0)
	write.SetConnMaxLifetime(0)

	rq := url.Values{}
	for k, v := range q {
		rq[k] = v
	}
	rq.Add("_pragma", "query_only(1)")
	rq.Add("_pragma", fmt.Sprintf("cache_size(-%d)", readCacheKiB))
	read, err := sql.Open("sqlite", base+"?"+rq.Encode())
	if err != nil {
		write.Close()
		return nil, fmt.Errorf("open db: %w", err)
	}
	conns := opts.ReadConns
	if conns <= 0 {
		conns = DefaultReadConns
	}
	read.SetMaxOpenConns(conns)
	read.SetMaxIdleConns(conns)
	read.SetConnMaxIdleTime(0)

	cq := url.Values{}
	for k, v := range q {
		cq[k] = v
	}
	cq.Add("_pragma", "cache_size(-256)")
	ckpt, err := sql.Open("sqlite", base+"?"+cq.Encode())
	if err != nil {
		write.Close()
		read.Close()
		return nil, fmt.Errorf("open db: %w", err)
	}
	ckpt.SetMaxOpenConns(1)
	ckpt.SetConnMaxIdleTime(0)

	db := &DB{write: write, read: read, ckpt: ckpt, path: path, Now: time.Now, stmts: map[string]*sql.Stmt{}, readStmts: map[string]*sql.Stmt{},
		ckptKick: make(chan struct{}, 1), ckptStop: make(chan struct{}), ckptDone: make(chan struct{})}
	go db.checkpointer()
	if err := db.migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	if err := db.prepare(ctx); err != nil {
		db.Close()
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		db.Close()
		return nil, fmt.Errorf("chmod db: %w", err)
	}
	return db, nil
}

// Path returns the database file path.
func (db *DB) Path() string { return db.path }

// writeStatements are prepared on the write connection when the database
// opens: compiling a statement costs more than running it. They must be
// prepared before any transaction, because the single write connection is
// busy for the whole of a transaction.
var writeStatements = []string{
	sqlPutBlock, sqlIndexRecord, sqlUnindexRecord,
	sqlMaybeDrop, sqlCreateHead, sqlMoveHead, sqlMoveHeadActive, sqlAccountStatus, sqlAppendEvent,
	sqlSavepoint, sqlRollbackTo, sqlRelease,
}

func (db *DB) prepare(ctx context.Context) error {
	for _, q := range append(writeStatements, blobWriteStatements...) {
		st, err := db.write.PrepareContext(ctx, q)
		if err != nil {
			return fmt.Errorf("prepare %q: %w", q, err)
		}
		db.stmts[q] = st
	}
	return nil
}

// stmt returns a statement prepared by prepare.
func (db *DB) stmt(q string) *sql.Stmt { return db.stmts[q] }

// readStmt returns the read-pool statement for q, preparing it on first
// use. database/sql re-prepares it on each pooled connection as needed.
func (db *DB) readStmt(ctx context.Context, q string) (*sql.Stmt, error) {
	db.readMu.Lock()
	defer db.readMu.Unlock()
	if st, ok := db.readStmts[q]; ok {
		return st, nil
	}
	st, err := db.read.PrepareContext(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("prepare query: %w", err)
	}
	db.readStmts[q] = st
	return st, nil
}

// queryRow runs a cached read statement that returns one row.
func (db *DB) queryRow(ctx context.Context, q string, args ...any) rowScanner {
	st, err := db.readStmt(ctx, q)
	if err != nil {
		return errRow{err}
	}
	return st.QueryRowContext(ctx, args...)
}

// query runs a cached read statement.
func (db *DB) query(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	st, err := db.readStmt(ctx, q)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(ctx, args...)
}

type rowScanner interface{ Scan(dest ...any) error }

type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

// Close closes both pools, keeping the first error.
func (db *DB) Close() error {
	close(db.ckptStop)
	<-db.ckptDone
	db.ckpt.Close()
	for _, st := range db.stmts {
		st.Close()
	}
	db.readMu.Lock()
	for _, st := range db.readStmts {
		st.Close()
	}
	db.readMu.Unlock()
	err := db.read.Close()
	if e := db.write.Close(); e != nil && err == nil {
		err = e
	}
	return err
}

// Ping checks that the database answers a query.
func (db *DB) Ping(ctx context.Context) error {
	var one int
	return db.read.QueryRowContext(ctx, "SELECT 1").Scan(&one)
}

// migrate applies every embedded migration not yet recorded, each in its
// own transaction, in file-name order.
func (db *DB) migrate(ctx context.Context) error {
	if _, err := db.write.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)`); err != nil {
		return fmt.Errorf("create migrations table: %w", err)
	}
	names, err := fs.Glob(migrationFS, "migrations/*.sql")
	if err != nil {
		return fmt.Errorf("list migrations: %w", err)
	}
	sort.Strings(names)
	for _, name := range names {
		if err := db.migrateFile(ctx, name); err != nil {
			return fmt.Errorf("migration %s: %w", name, err)
		}
	}
	return nil
}

func (db *DB) migrateFile(ctx context.Context, name string) error {
	tx, err := db.write.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var n int
	if err := tx.QueryRowContext(ctx, "SELECT COUNT(*) FROM schema_migrations WHERE name = ?", name).Scan(&n); err != nil {
		return err
	}
	if n != 0 {
		return nil
	}
	body, err := migrationFS.ReadFile(name)
	if err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, string(body)); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO schema_migrations (name, applied_at) VALUES (?, ?)",
		name, db.now()); err != nil {
		return err
	}
	return tx.Commit()
}

func (db *DB) now() string {
	return db.Now().UTC().Format("2006-01-02T15:04:05.000Z")
}

// withTx runs fn in a write transaction and commits it when fn returns nil.
func (db *DB) withTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := db.write.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin tx: %w", err)
	}
	// db.txEvents belongs to whoever holds the write connection: it is
	// read and cleared before Commit or Rollback hands the connection on.
	db.txEvents = nil
	if err := fn(tx); err != nil {
		db.txEvents = nil
		tx.Rollback()
		return err
	}
	evs := db.txEvents
	db.txEvents = nil
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit tx: %w", err)
	}
	if db.commits.Add(1)%checkpointEvery == 0 {
		select {
		case db.ckptKick <- struct{}{}:
		default:
		}
	}
	if len(evs) > 0 {
		if fn := db.onEvents.Load(); fn != nil {
			(*fn)(evs)
		}
	}
	return nil
}

// checkpointer runs passive checkpoints on db.ckpt: when kicked, and once
// writes have paused, until Close. A passive checkpoint never blocks the
// writer or readers; it copies what no reader still needs, and the
// writer starts the WAL over once everything has been copied. A failed
// one is left to the next (or to the write connection's automatic one).
func (db *DB) checkpointer() {
	defer close(db.ckptDone)
	t := time.NewTicker(checkpointIdle)
	defer t.Stop()
	var done int64 // commits at the last checkpoint
	for {
		select {
		case <-db.ckptStop:
			return
		case <-db.ckptKick:
		case <-t.C:
			if db.commits.Load() == done {
				continue
			}
		}
		done = db.commits.Load()
		db.ckpt.Exec("PRAGMA wal_checkpoint(PASSIVE)")
	}
}

// isUniqueViolation reports whether err is a UNIQUE/PRIMARY KEY constraint
// failure; the driver exposes it only through the message text.
func isUniqueViolation(err error) bool {
	return err != nil && strings.Contains(err.Error(), "UNIQUE constraint failed")
}

var errNoRows = sql.ErrNoRows

func isNoRows(err error) bool { return errors.Is(err, errNoRows) }

// OnEvents registers fn to be called after every transaction that
// appended firehose events has committed, with those events in seq order
// (the firehose hub's wake-up). Calls for two transactions may overlap or
// come out of order; events of other processes never come.
func (db *DB) OnEvents(fn func([]sequencer.Stored)) { db.onEvents.Store(&fn) }

// MigrationCount returns how many migrations have been applied.
func (db *DB) MigrationCount(ctx context.Context) (int, error) {
	var n int
	err := db.read.QueryRowContext(ctx, "SELECT COUNT(*) FROM schema_migrations").Scan(&n)
	return n, err
}
