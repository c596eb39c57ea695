package account

import (
	"context"
	"errors"
	"fmt"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"stratus/internal/pdserr"
	"stratus/internal/sequencer"
)

// ErrHandleTaken is returned by a HandleStore when another account holds
// the handle.
var ErrHandleTaken = errors.New("handle taken")

// HandleStore changes an account's handle. The SQLite store implements it.
type HandleStore interface {
	// SetHandle changes did's handle and appends events, in one
	// transaction; ErrHandleTaken if another account has the handle.
	SetHandle(ctx context.Context, did syntax.DID, handle syntax.Handle, events []sequencer.Event) error
}

// SetHandle changes the handle of did and announces it with an #identity
// event in the same transaction. Setting the current handle again only
// re-announces it, which is how consumers are told to re-resolve.
func (s *Service) SetHandle(ctx context.Context, did syntax.DID, h syntax.Handle) error {
	hs, ok := s.store.(HandleStore)
	if !ok {
		return errors.New("account store cannot change handles")
	}
	h = h.Normalize()
	ev, err := sequencer.Identity(did, h.String(), s.now())
	if err != nil {
		return err
	}
	err = hs.SetHandle(ctx, did, h, []sequencer.Event{ev})
	s.forget(did)
	switch {
	case errors.Is(err, ErrHandleTaken):
		return pdserr.New(pdserr.HandleNotAvailable, "Handle already taken: %s", h)
	case errors.Is(err, ErrNotFound):
		return pdserr.Wrap(err, pdserr.RepoNotFound, "Could not find repo for DID: "+did.String())
	case err != nil:
		return fmt.Errorf("set handle: %w", err)
	}
	return nil
}
