package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"stratus/internal/account"
	"stratus/internal/sequencer"
)

// AccountStore implements account.Store.
type AccountStore struct{ db *DB }

// Accounts returns the account store of db.
func (db *DB) Accounts() *AccountStore { return &AccountStore{db: db} }

var _ account.Store = (*AccountStore)(nil)

const accountCols = "did, handle, email, status, created_at"

func scanAccount(sc interface{ Scan(...any) error }) (account.Account, error) {
	var a account.Account
	var did, handle, status, created string
	if err := sc.Scan(&did, &handle, &a.Email, &status, &created); err != nil {
		if isNoRows(err) {
			return a, account.ErrNotFound
		}
		return a, fmt.Errorf("read account: %w", err)
	}
	a.DID, a.Handle, a.Status = syntax.DID(did), syntax.Handle(handle), account.Status(status)
	a.CreatedAt, _ = time.Parse(time.RFC3339Nano, created)
	return a, nil
}

// Create implements account.Store.
func (s *AccountStore) Create(ctx context.Context, a account.Account) error {
	return s.db.withTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, "INSERT INTO accounts ("+accountCols+") VALUES (?, ?, ?, ?, ?)",
			a.DID.String(), a.Handle.String(), a.Email, string(a.Status), a.CreatedAt.UTC().Format(time.RFC3339Nano))
		if isUniqueViolation(err) {
			return fmt.Errorf("create account %s: already exists", a.DID)
		}
		if err != nil {
			return fmt.Errorf("create account: %w", err)
		}
		return nil
	})
}

// Get implements account.Store.
func (s *AccountStore) Get(ctx context.Context, did syntax.DID) (account.Account, error) {
	return scanAccount(s.db.queryRow(ctx, "SELECT "+accountCols+" FROM accounts WHERE did = ?", did.String()))
}

// ByHandle implements account.Store.
func (s *AccountStore) ByHandle(ctx context.Context, h syntax.Handle) (account.Account, error) {
	return scanAccount(s.db.queryRow(ctx, "SELECT "+accountCols+" FROM accounts WHERE handle = ?", h.String()))
}

// List implements account.Store.
func (s *AccountStore) List(ctx context.Context, cursor string, limit int) ([]account.Account, error) {
	rows, err := s.db.read.QueryContext(ctx, "SELECT "+accountCols+" FROM accounts WHERE did > ? ORDER BY did LIMIT ?", cursor, limit)
	if err != nil {
		return nil, fmt.Errorf("list accounts: %w", err)
	}
	defer rows.Close()
	var out []account.Account
	for rows.Next() {
		a, err := scanAccount(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// SetStatus implements account.Store.
func (s *AccountStore) SetStatus(ctx context.Context, did syntax.DID, from, to account.Status, events []sequencer.Event) (bool, error) {
	changed := false
	err := s.db.withTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, "UPDATE accounts SET status = ? WHERE did = ? AND status = ?", string(to), did.String(), string(from))
		if err != nil {
			return fmt.Errorf("set status: %w", err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return fmt.Errorf("set status: %w", err)
		}
		if n == 0 {
			return nil
		}
		changed = true
		_, err = s.db.appendEvents(ctx, tx, did.String(), events)
		return err
	})
	return changed, err
}

// AppendEvents implements account.Store.
func (s *AccountStore) AppendEvents(ctx context.Context, did syntax.DID, events []sequencer.Event) ([]int64, error) {
	var seqs []int64
	err := s.db.withTx(ctx, func(tx *sql.Tx) error {
		var err error
		seqs, err = s.db.appendEvents(ctx, tx, did.String(), events)
		return err
	})
	if err != nil {
		return nil, err
	}
	return seqs, nil
}
