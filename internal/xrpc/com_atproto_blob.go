package xrpc

import (
	"net/http"
	"strings"
	"time"

	"github.com/ipfs/go-cid"

	"stratus/internal/account"
	"stratus/internal/auth"
	"stratus/internal/blob"
	"stratus/internal/pdserr"
)

// blobCacheControl lets browsers and caches keep a blob for a day without
// asking again: a CID names its bytes forever, but a blob can still be
// deleted (its record deleted, its account taken down), which a year-long
// public cache would ignore.
const blobCacheControl = "public, max-age=86400, immutable"

// handleRepoUploadBlob serves com.atproto.repo.uploadBlob: the body is
// streamed into the blob store, never held in memory.
func (s *Server) handleRepoUploadBlob(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	if s.deps.Blobs == nil {
		return pdserr.New(pdserr.ServiceUnavailable, "Blob storage is not configured")
	}
	if p.DID == "" {
		return pdserr.New(pdserr.InvalidRequest, "Blobs belong to an account: upload with an account session")
	}
	a, err := s.deps.Accounts.Get(r.Context(), p.DID)
	if err != nil {
		return err
	}
	if a.Status == account.Takendown {
		return pdserr.New(pdserr.AccountTakedown, "Account has been taken down")
	}
	if enc := strings.TrimSpace(r.Header.Get("Content-Encoding")); enc != "" && !strings.EqualFold(enc, "identity") {
		return pdserr.New(pdserr.UnsupportedMediaType, "unsupported content-encoding %q: send the blob uncompressed", enc)
	}
	m, err := s.deps.Blobs.Upload(r.Context(), p.DID, r.Body, r.Header.Get("Content-Type"), r.ContentLength, time.Now())
	if err != nil {
		return err
	}
	type link struct {
		Link string `json:"$link"`
	}
	type blobRef struct {
		Type     string `json:"$type"`
		Ref      link   `json:"ref"`
		MimeType string `json:"mimeType"`
		Size     int64  `json:"size"`
	}
	return writeJSON(w, struct {
		Blob blobRef `json:"blob"`
	}{blobRef{Type: "blob", Ref: link{m.CID.String()}, MimeType: m.MimeType, Size: m.Size}})
}

// handleSyncGetBlob serves com.atproto.sync.getBlob (and HEAD), with Range
// support for seeking in videos. The headers keep a blob from ever running
// as a document of this origin: its stored, checked type, nosniff, a
// sandboxing CSP and a download disposition.
func (s *Server) handleSyncGetBlob(w http.ResponseWriter, r *http.Request, _ *auth.Principal) error {
	a, err := s.servableRepo(r)
	if err != nil {
		return err
	}
	raw, err := queryString(r, "cid", true)
	if err != nil {
		return err
	}
	c, err := cid.Decode(raw)
	if err != nil {
		return pdserr.New(pdserr.InvalidRequest, "Error: cid must be a cid string")
	}
	if s.deps.Blobs == nil {
		return pdserr.New(pdserr.BlobNotFound, "Blob not found")
	}
	m, rd, err := s.deps.Blobs.Open(r.Context(), blob.Key{DID: a.DID, CID: c})
	if err != nil {
		return err
	}
	defer rd.Close()
	h := w.Header()
	h.Set("Content-Type", m.MimeType)
	h.Set("ETag", `"`+c.String()+`"`)
	if a.Active() {
		h.Set("Cache-Control", blobCacheControl)
	} else {
		// Served only to the account itself or the operator.
		h.Set("Cache-Control", "private, no-store")
	}
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", "default-src 'none'; sandbox")
	h.Set("Content-Disposition", `attachment; filename="`+c.String()+`"`)
	http.ServeContent(w, r, "", time.Time{}, rd)
	return nil
}

// handleSyncListBlobs serves com.atproto.sync.listBlobs: the blobs that
// the account's records reference, in CID order.
func (s *Server) handleSyncListBlobs(w http.ResponseWriter, r *http.Request, _ *auth.Principal) error {
	a, err := s.servableRepo(r)
	if err != nil {
		return err
	}
	since, err := querySince(r)
	if err != nil {
		return err
	}
	limit, err := queryInt(r, "limit", 500, 1, 1000)
	if err != nil {
		return err
	}
	out := struct {
		Cursor string   `json:"cursor,omitempty"`
		CIDs   []string `json:"cids"`
	}{CIDs: []string{}}
	if s.deps.Blobs == nil {
		return writeJSON(w, out)
	}
	cids, err := s.deps.Blobs.ListBlobs(r.Context(), a.DID, since, r.URL.Query().Get("cursor"), limit+1)
	if err != nil {
		return err
	}
	if len(cids) > limit {
		cids = cids[:limit]
		out.Cursor = cids[limit-1].String()
	}
	for _, c := range cids {
		out.CIDs = append(out.CIDs, c.String())
	}
	return writeJSON(w, out)
}

// handleRepoListMissingBlobs serves com.atproto.repo.listMissingBlobs: the
// blobs the caller's records reference that the server does not hold.
func (s *Server) handleRepoListMissingBlobs(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	if p.DID == "" {
		return pdserr.New(pdserr.InvalidRequest, "listMissingBlobs needs an account session")
	}
	limit, err := queryInt(r, "limit", 500, 1, 1000)
	if err != nil {
		return err
	}
	type missing struct {
		CID       string `json:"cid"`
		RecordURI string `json:"recordUri"`
	}
	out := struct {
		Cursor string    `json:"cursor,omitempty"`
		Blobs  []missing `json:"blobs"`
	}{Blobs: []missing{}}
	if s.deps.Blobs == nil {
		return writeJSON(w, out)
	}
	list, err := s.deps.Blobs.ListMissing(r.Context(), p.DID, r.URL.Query().Get("cursor"), limit+1)
	if err != nil {
		return err
	}
	if len(list) > limit {
		list = list[:limit]
		out.Cursor = list[limit-1].CID.String()
	}
	for _, m := range list {
		out.Blobs = append(out.Blobs, missing{CID: m.CID.String(), RecordURI: m.RecordURI.String()})
	}
	return writeJSON(w, out)
}
