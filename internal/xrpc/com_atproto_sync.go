package xrpc

import (
	"net/http"
	"strconv"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"

	"stratus/internal/account"
	"stratus/internal/auth"
	"stratus/internal/pdserr"
)

const carContentType = "application/vnd.ipld.car"

// servableRepo resolves the did parameter of a sync method and checks the
// repository may be served: deactivated and taken-down repositories are
// refused to everyone but the operator and the account itself.
func (s *Server) servableRepo(r *http.Request) (account.Account, error) {
	did, err := queryDID(r, "did")
	if err != nil {
		return account.Account{}, err
	}
	a, err := s.deps.Accounts.Available(r.Context(), did)
	if err != nil && pdserr.Is(err, pdserr.RepoNotFound) {
		return a, err
	}
	if err != nil {
		if p, perr := s.deps.Auth.Authenticate(r); perr == nil && p.ActsFor(did) {
			return a, nil
		}
		return a, err
	}
	return a, nil
}

func writeCARBytes(w http.ResponseWriter, car []byte) error {
	w.Header().Set("Content-Type", carContentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(car)))
	if _, err := w.Write(car); err != nil {
		return errClientGone
	}
	return nil
}

// querySince reads the optional since parameter, a revision (TID).
func querySince(r *http.Request) (string, error) {
	since := r.URL.Query().Get("since")
	if since != "" {
		if _, err := syntax.ParseTID(since); err != nil {
			return "", pdserr.New(pdserr.InvalidRequest, "Error: since must be a valid tid")
		}
	}
	return since, nil
}

// handleSyncGetRepo serves com.atproto.sync.getRepo, streaming the CAR.
func (s *Server) handleSyncGetRepo(w http.ResponseWriter, r *http.Request, _ *auth.Principal) error {
	a, err := s.servableRepo(r)
	if err != nil {
		return err
	}
	since, err := querySince(r)
	if err != nil {
		return err
	}
	started := false
	err = s.deps.Repos.ExportCAR(r.Context(), a.DID, since, headerOnFirstWrite{w: w, started: &started})
	if err != nil && started {
		// The status line is gone; abort the stream so the client sees a
		// truncated transfer instead of a short but well-formed CAR.
		s.log.WarnContext(r.Context(), "repo export aborted", "did", a.DID, "err", err)
		panic(http.ErrAbortHandler)
	}
	return err
}

// headerOnFirstWrite sets the CAR content type just before the first byte,
// so that errors found before any output still become XRPC errors.
type headerOnFirstWrite struct {
	w       http.ResponseWriter
	started *bool
}

func (h headerOnFirstWrite) Write(p []byte) (int, error) {
	if !*h.started {
		*h.started = true
		h.w.Header().Set("Content-Type", carContentType)
	}
	return h.w.Write(p)
}

// handleSyncGetLatestCommit serves com.atproto.sync.getLatestCommit.
func (s *Server) handleSyncGetLatestCommit(w http.ResponseWriter, r *http.Request, _ *auth.Principal) error {
	a, err := s.servableRepo(r)
	if err != nil {
		return err
	}
	head, err := s.deps.Repos.Head(r.Context(), a.DID)
	if err != nil {
		return err
	}
	return writeJSON(w, struct {
		CID string `json:"cid"`
		Rev string `json:"rev"`
	}{head.Commit.String(), head.Rev.String()})
}

// handleSyncGetRepoStatus serves com.atproto.sync.getRepoStatus.
func (s *Server) handleSyncGetRepoStatus(w http.ResponseWriter, r *http.Request, _ *auth.Principal) error {
	did, err := queryDID(r, "did")
	if err != nil {
		return err
	}
	a, err := s.deps.Accounts.Get(r.Context(), did)
	if err != nil {
		return err
	}
	out := struct {
		DID    string `json:"did"`
		Active bool   `json:"active"`
		Status string `json:"status,omitempty"`
		Rev    string `json:"rev,omitempty"`
	}{DID: did.String(), Active: a.Active()}
	if a.Active() {
		head, err := s.deps.Repos.Head(r.Context(), did)
		if err != nil {
			return err
		}
		out.Rev = head.Rev.String()
	} else {
		out.Status = string(a.Status)
	}
	return writeJSON(w, out)
}

// handleSyncListRepos serves com.atproto.sync.listRepos.
func (s *Server) handleSyncListRepos(w http.ResponseWriter, r *http.Request, _ *auth.Principal) error {
	limit, err := queryInt(r, "limit", 500, 1, 1000)
	if err != nil {
		return err
	}
	cursor := r.URL.Query().Get("cursor")
	accounts, err := s.deps.Accounts.List(r.Context(), cursor, limit+1)
	if err != nil {
		return err
	}
	type repoJSON struct {
		DID    string `json:"did"`
		Head   string `json:"head"`
		Rev    string `json:"rev"`
		Active bool   `json:"active"`
		Status string `json:"status,omitempty"`
	}
	out := struct {
		Cursor string     `json:"cursor,omitempty"`
		Repos  []repoJSON `json:"repos"`
	}{Repos: []repoJSON{}}
	if len(accounts) > limit {
		accounts = accounts[:limit]
		out.Cursor = accounts[limit-1].DID.String()
	}
	for _, a := range accounts {
		head, err := s.deps.Repos.Head(r.Context(), a.DID)
		if err != nil {
			if pdserr.Is(err, pdserr.RepoNotFound) {
				continue // account whose genesis has not been written
			}
			return err
		}
		rj := repoJSON{DID: a.DID.String(), Head: head.Commit.String(), Rev: head.Rev.String(), Active: a.Active()}
		if !a.Active() {
			rj.Status = string(a.Status)
		}
		out.Repos = append(out.Repos, rj)
	}
	return writeJSON(w, out)
}

// handleSyncGetBlocks serves com.atproto.sync.getBlocks.
func (s *Server) handleSyncGetBlocks(w http.ResponseWriter, r *http.Request, _ *auth.Principal) error {
	a, err := s.servableRepo(r)
	if err != nil {
		return err
	}
	raw := r.URL.Query()["cids"]
	if len(raw) == 0 {
		return pdserr.New(pdserr.InvalidRequest, "Error: Params must have the property \"cids\"")
	}
	if len(raw) > 1000 {
		return pdserr.New(pdserr.InvalidRequest, "Error: cids must not have more than 1000 elements")
	}
	cids := make([]cid.Cid, len(raw))
	for i, v := range raw {
		c, err := cid.Decode(v)
		if err != nil {
			return pdserr.New(pdserr.InvalidRequest, "Error: cids/%d must be a cid string", i)
		}
		cids[i] = c
	}
	car, err := s.deps.Repos.Blocks(r.Context(), a.DID, cids)
	if err != nil {
		return err
	}
	return writeCARBytes(w, car)
}

// handleSyncGetRecord serves com.atproto.sync.getRecord: a CAR proving the
// record's presence (or absence) under the current commit.
func (s *Server) handleSyncGetRecord(w http.ResponseWriter, r *http.Request, _ *auth.Principal) error {
	a, err := s.servableRepo(r)
	if err != nil {
		return err
	}
	coll, err := queryNSID(r, "collection")
	if err != nil {
		return err
	}
	rkey, err := queryRecordKey(r, "rkey")
	if err != nil {
		return err
	}
	car, err := s.deps.Repos.RecordProof(r.Context(), a.DID, coll, rkey)
	if err != nil {
		return err
	}
	return writeCARBytes(w, car)
}
