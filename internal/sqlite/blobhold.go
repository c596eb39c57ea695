package sqlite

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// ErrNoHolds is returned by HoldBlobs when the database predates blob
// holds (a server of this version has never opened it, so none is running
// on it that would honour one).
var ErrNoHolds = errors.New("the database has no blob_holds table")

// BlobHold pauses blob collection in every server using a database until
// it is released or expires: the collector forgets no blob while an
// unexpired hold exists (see BlobIndex.Forget). A backup takes one before
// its snapshot so that every blob the snapshot lists is still in the store
// when it is copied.
type BlobHold struct {
	db *sql.DB
	id string
}

// HoldBlobs opens the database at path (which a server may have open)
// and inserts a hold that expires after ttl unless renewed.
func HoldBlobs(ctx context.Context, path string, ttl time.Duration) (*BlobHold, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("%w at %s", ErrNoDatabase, path)
	}
	db, err := sql.Open("sqlite", "file:"+filepath.ToSlash(path)+"?mode=rw&_pragma=busy_timeout(10000)&_pragma=synchronous(FULL)")
	if err != nil {
		return nil, fmt.Errorf("open db: %w", err)
	}
	db.SetMaxOpenConns(1)
	b := make([]byte, 8)
	rand.Read(b)
	h := &BlobHold{db: db, id: hex.EncodeToString(b)}
	if err := h.Renew(ctx, ttl); err != nil {
		db.Close()
		if strings.Contains(err.Error(), "no such table") {
			return nil, ErrNoHolds
		}
		return nil, err
	}
	return h, nil
}

// Renew moves the hold's expiry to ttl from now.
func (h *BlobHold) Renew(ctx context.Context, ttl time.Duration) error {
	_, err := h.db.ExecContext(ctx, "INSERT OR REPLACE INTO blob_holds (id, expires_at) VALUES (?, ?)",
		h.id, time.Now().Add(ttl).UnixMilli())
	if err != nil {
		return fmt.Errorf("hold blob collection: %w", err)
	}
	return nil
}

// Release deletes the hold (and any expired ones) and closes the database.
func (h *BlobHold) Release(ctx context.Context) error {
	_, err := h.db.ExecContext(ctx, "DELETE FROM blob_holds WHERE id = ? OR expires_at < ?", h.id, time.Now().UnixMilli())
	if e := h.db.Close(); err == nil {
		err = e
	}
	if err != nil {
		return fmt.Errorf("release blob hold: %w", err)
	}
	return nil
}
