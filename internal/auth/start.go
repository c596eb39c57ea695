package auth

import (
	"context"

	"stratus/internal/account"
)

// Start begins a full session for a, as a password login does, for flows
// that proved control of the account another way: createAccount during a
// migration, authorised by a service token from the account's previous
// host.
func (s *Sessions) Start(ctx context.Context, a account.Account) (*Session, error) {
	return s.start(ctx, a, nil)
}
