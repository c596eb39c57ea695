package xrpc

import (
	"context"
	"net/http"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"stratus/internal/account"
	"stratus/internal/auth"
	"stratus/internal/identity"
	"stratus/internal/pdserr"
)

// selfDID is the account a principal acts as for methods without a repo
// parameter; the operator acts as the primary account.
func (s *Server) selfDID(p *auth.Principal) (syntax.DID, error) {
	if p.DID != "" {
		return p.DID, nil
	}
	if p.Kind == auth.Admin && s.deps.PrimaryDID != "" {
		return s.deps.PrimaryDID, nil
	}
	return "", pdserr.New(pdserr.InvalidRequest, "No account to act as")
}

// selfAccount returns the account a principal acts as (see selfDID).
func (s *Server) selfAccount(r *http.Request, p *auth.Principal) (account.Account, error) {
	did, err := s.selfDID(p)
	if err != nil {
		return account.Account{}, err
	}
	return s.deps.Accounts.Get(r.Context(), did)
}

// didDocument builds the DID document the server publishes for a local
// account.
func (s *Server) didDocument(ctx context.Context, a account.Account) (identity.Document, error) {
	pub, err := s.deps.SigningKey(ctx, a.DID)
	if err != nil {
		return identity.Document{}, err
	}
	return identity.NewDocument(a.DID, a.Handle, pub, s.deps.PublicURL), nil
}

// handleServerDescribeServer serves com.atproto.server.describeServer.
func (s *Server) handleServerDescribeServer(w http.ResponseWriter, r *http.Request, _ *auth.Principal) error {
	type links struct {
		PrivacyPolicy  string `json:"privacyPolicy,omitempty"`
		TermsOfService string `json:"termsOfService,omitempty"`
	}
	type contact struct {
		Email string `json:"email,omitempty"`
	}
	out := struct {
		DID                  string   `json:"did"`
		AvailableUserDomains []string `json:"availableUserDomains"`
		InviteCodeRequired   bool     `json:"inviteCodeRequired"`
		PhoneVerification    bool     `json:"phoneVerificationRequired"`
		Links                *links   `json:"links,omitempty"`
		Contact              *contact `json:"contact,omitempty"`
	}{
		DID:                  "did:web:" + s.deps.Hostname,
		AvailableUserDomains: s.deps.UserDomains,
		// Accounts are created by the operator with `pds init`; there is
		// no public sign-up.
		InviteCodeRequired: true,
	}
	if out.AvailableUserDomains == nil {
		out.AvailableUserDomains = []string{}
	}
	if l := s.deps.Links; l.PrivacyPolicy != "" || l.TermsOfService != "" {
		out.Links = &links{PrivacyPolicy: l.PrivacyPolicy, TermsOfService: l.TermsOfService}
	}
	if s.deps.Links.ContactEmail != "" {
		out.Contact = &contact{Email: s.deps.Links.ContactEmail}
	}
	return writeJSON(w, out)
}

// handleServerActivateAccount serves com.atproto.server.activateAccount.
func (s *Server) handleServerActivateAccount(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	did, err := s.selfDID(p)
	if err != nil {
		return err
	}
	if err := s.deps.Accounts.Activate(r.Context(), did); err != nil {
		return err
	}
	w.WriteHeader(http.StatusOK)
	return nil
}

// handleServerDeactivateAccount serves com.atproto.server.deactivateAccount.
func (s *Server) handleServerDeactivateAccount(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	did, err := s.selfDID(p)
	if err != nil {
		return err
	}
	// The optional deleteAfter input is accepted but not acted on: this
	// server never deletes an account on its own.
	if r.ContentLength != 0 {
		var in struct {
			DeleteAfter string `json:"deleteAfter"`
		}
		if err := decodeJSON(r, &in); err != nil {
			return err
		}
	}
	if err := s.deps.Accounts.Deactivate(r.Context(), did); err != nil {
		return err
	}
	w.WriteHeader(http.StatusOK)
	return nil
}

// handleServerCheckAccountStatus serves com.atproto.server.checkAccountStatus.
func (s *Server) handleServerCheckAccountStatus(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	a, err := s.selfAccount(r, p)
	if err != nil {
		return err
	}
	did := a.DID
	head, err := s.deps.Repos.Head(r.Context(), did)
	if err != nil {
		return err
	}
	blocks, records, err := s.deps.Repos.Stats(r.Context(), did)
	if err != nil {
		return err
	}
	var private, expectedBlobs, importedBlobs int64
	if s.deps.Prefs != nil {
		if private, err = s.deps.Prefs.Count(r.Context(), did); err != nil {
			return err
		}
	}
	if s.deps.BlobCounts != nil {
		if expectedBlobs, importedBlobs, err = s.deps.BlobCounts(r.Context(), did); err != nil {
			return err
		}
	}
	valid := true
	if s.deps.ValidDID != nil {
		valid = s.deps.ValidDID(r.Context(), did)
	}
	return writeJSON(w, struct {
		Activated          bool   `json:"activated"`
		ValidDID           bool   `json:"validDid"`
		RepoCommit         string `json:"repoCommit"`
		RepoRev            string `json:"repoRev"`
		RepoBlocks         int64  `json:"repoBlocks"`
		IndexedRecords     int64  `json:"indexedRecords"`
		PrivateStateValues int64  `json:"privateStateValues"`
		ExpectedBlobs      int64  `json:"expectedBlobs"`
		ImportedBlobs      int64  `json:"importedBlobs"`
	}{
		Activated:      a.Active(),
		ValidDID:       valid,
		RepoCommit:     head.Commit.String(),
		RepoRev:        head.Rev.String(),
		RepoBlocks:     blocks,
		IndexedRecords: records,

		PrivateStateValues: private,
		ExpectedBlobs:      expectedBlobs,
		ImportedBlobs:      importedBlobs,
	})
}
