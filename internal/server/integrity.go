package server

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"stratus/internal/repo"
	"stratus/internal/sequencer"
)

// verifyStorage refuses to serve a damaged database or repository: a
// server that answered anyway would sign new commits over damaged data,
// or export a repository that does not match its signature. The database
// file is checked with SQLite's quick_check, the repository as on its
// first use. `pds check` gives the full report.
func (s *Server) verifyStorage(ctx context.Context, did syntax.DID) error {
	lines, err := s.db.QuickCheck(ctx)
	if err != nil {
		return fmt.Errorf("the database is damaged (%v); run pds check for a report and restore from a backup", err)
	}
	if len(lines) > 0 {
		if len(lines) > 5 {
			lines = append(lines[:5], "...")
		}
		return fmt.Errorf("the database is damaged: %s; run pds check for a report and restore from a backup", strings.Join(lines, "; "))
	}
	if err := s.repos.Verify(ctx, did); err != nil {
		return fmt.Errorf("refusing to serve the repository of %s: %w; run pds check (pds check --repair fixes what can be derived)", did, err)
	}
	return nil
}

// Recommit re-signs the repository's unchanged tree with a fresh rev and
// announces it with #identity, #account and #sync events, in one
// transaction. After a restore from backup the repository is older than
// what relays last saw; a new rev above theirs and a #sync tell them to
// take this state (the recovery the reference PDS's operators perform).
func (s *Server) Recommit(ctx context.Context) (repo.Head, error) {
	did := syntax.DID(s.cfg.DID)
	a, err := s.accounts.Get(ctx, did)
	if err != nil {
		return repo.Head{}, err
	}
	now := time.Now()
	return s.repos.Resign(ctx, did, func(h repo.Head, car []byte) ([]sequencer.Event, error) {
		id, err := sequencer.Identity(did, a.Handle.String(), now)
		if err != nil {
			return nil, err
		}
		status := ""
		if !a.Active() {
			status = string(a.Status)
		}
		acc, err := sequencer.Account(did, a.Active(), status, now)
		if err != nil {
			return nil, err
		}
		sync, err := sequencer.Sync(did, h.Rev, car, now)
		if err != nil {
			return nil, err
		}
		return []sequencer.Event{id, acc, sync}, nil
	})
}
