package sqlite

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"stratus/internal/account"
	"stratus/internal/sequencer"
)

var _ account.HandleStore = (*AccountStore)(nil)

// SetHandle implements account.HandleStore.
func (s *AccountStore) SetHandle(ctx context.Context, did syntax.DID, h syntax.Handle, events []sequencer.Event) error {
	err := s.db.withTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, "UPDATE accounts SET handle = ? WHERE did = ?", h.String(), did.String())
		if isUniqueViolation(err) {
			return account.ErrHandleTaken
		}
		if err != nil {
			return fmt.Errorf("set handle: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("set handle: %w", err)
		} else if n == 0 {
			return account.ErrNotFound
		}
		_, err = s.db.appendEvents(ctx, tx, did.String(), events)
		return err
	})
	return err
}
