package xrpc

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/bluesky-social/indigo/atproto/atdata"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"

	"stratus/internal/account"
	"stratus/internal/atjson"
	"stratus/internal/auth"
	"stratus/internal/pdserr"
	"stratus/internal/repo"
)

// writableRepo resolves the repo named in a write and checks that the
// principal acts for it.
func (s *Server) writableRepo(ctx context.Context, p *auth.Principal, id string) (syntax.DID, error) {
	if id == "" {
		return "", pdserr.New(pdserr.InvalidRequest, "Input must have the property \"repo\"")
	}
	a, err := s.deps.Accounts.Resolve(ctx, id)
	if err != nil {
		if pdserr.Is(err, pdserr.RepoNotFound) {
			return "", pdserr.New(pdserr.InvalidRepo, "Invalid repository: %s", id)
		}
		return "", err
	}
	if !p.ActsFor(a.DID) {
		return "", pdserr.New(pdserr.AuthRequired, "Not authorized to write to %s", id)
	}
	return a.DID, nil
}

func parseNSID(field, v string) (syntax.NSID, error) {
	if v == "" {
		return "", pdserr.New(pdserr.InvalidRequest, "Input must have the property %q", field)
	}
	n, err := syntax.ParseNSID(v)
	if err != nil {
		return "", pdserr.New(pdserr.InvalidRequest, "Input/%s must be a valid nsid", field)
	}
	return n, nil
}

func parseRKey(field string, v *string, required bool) (syntax.RecordKey, error) {
	if v == nil {
		if required {
			return "", pdserr.New(pdserr.InvalidRequest, "Input must have the property %q", field)
		}
		return "", nil
	}
	if *v == "" {
		return "", pdserr.New(pdserr.InvalidRequest, "Input/%s must be a non-empty string", field)
	}
	k, err := syntax.ParseRecordKey(*v)
	if err != nil {
		return "", pdserr.New(pdserr.InvalidRequest, "Invalid record key: %s", *v)
	}
	return k, nil
}

func parseCID(field string, v *string) (*cid.Cid, error) {
	if v == nil {
		return nil, nil
	}
	c, err := cid.Decode(*v)
	if err != nil {
		return nil, pdserr.New(pdserr.InvalidRequest, "Input/%s must be a cid string", field)
	}
	return &c, nil
}

// parseRecord converts a JSON record into the atproto data model, refusing
// anything that is not an object or not valid atproto data (floats, bad
// $link or $bytes, ...).
func parseRecord(field string, raw json.RawMessage) (map[string]any, error) {
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) == 0 || bytes.Equal(trimmed, []byte("null")) {
		return nil, pdserr.New(pdserr.InvalidRequest, "Input must have the property %q", field)
	}
	if trimmed[0] != '{' {
		return nil, pdserr.New(pdserr.InvalidRequest, "Input/%s must be an object", field)
	}
	rec, err := atdata.UnmarshalJSON(trimmed)
	if err != nil {
		return nil, pdserr.New(pdserr.InvalidRecord, "Invalid record: %v", err)
	}
	return rec, nil
}

// swapField is a nullable, optional CID: absent, null (the record must not
// exist), or a CID.
type swapField struct {
	set bool
	cid *string
}

func (f *swapField) UnmarshalJSON(b []byte) error {
	f.set = true
	if bytes.Equal(bytes.TrimSpace(b), []byte("null")) {
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	f.cid = &s
	return nil
}

func (f swapField) swap(field string) (*repo.Swap, error) {
	if !f.set {
		return nil, nil
	}
	c, err := parseCID(field, f.cid)
	if err != nil {
		return nil, err
	}
	return &repo.Swap{CID: c}, nil
}

type commitMeta struct {
	CID string `json:"cid"`
	Rev string `json:"rev"`
}

func commitOf(o *repo.Outcome) *commitMeta {
	if o.Commit == nil {
		return nil
	}
	return &commitMeta{CID: o.Commit.CID.String(), Rev: o.Commit.Rev.String()}
}

type writeOutput struct {
	URI              string      `json:"uri"`
	CID              string      `json:"cid"`
	Commit           *commitMeta `json:"commit,omitempty"`
	ValidationStatus string      `json:"validationStatus,omitempty"`
}

// handleRepoCreateRecord serves com.atproto.repo.createRecord.
func (s *Server) handleRepoCreateRecord(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	var in struct {
		Repo       string          `json:"repo"`
		Collection string          `json:"collection"`
		RKey       *string         `json:"rkey"`
		Validate   *bool           `json:"validate"`
		Record     json.RawMessage `json:"record"`
		SwapCommit *string         `json:"swapCommit"`
	}
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	did, err := s.writableRepo(r.Context(), p, in.Repo)
	if err != nil {
		return err
	}
	coll, err := parseNSID("collection", in.Collection)
	if err != nil {
		return err
	}
	rkey, err := parseRKey("rkey", in.RKey, false)
	if err != nil {
		return err
	}
	rec, err := parseRecord("record", in.Record)
	if err != nil {
		return err
	}
	swapCommit, err := parseCID("swapCommit", in.SwapCommit)
	if err != nil {
		return err
	}
	out, err := s.deps.Repos.ApplyWrites(r.Context(), did, []repo.Write{{Action: repo.Create, Collection: coll, RKey: rkey, Record: rec}},
		repo.Options{Validate: in.Validate, SwapCommit: swapCommit})
	if err != nil {
		return err
	}
	res := out.Results[0]
	return writeJSON(w, writeOutput{URI: res.URI.String(), CID: res.CID.String(), Commit: commitOf(out), ValidationStatus: res.ValidationStatus})
}

// handleRepoPutRecord serves com.atproto.repo.putRecord.
func (s *Server) handleRepoPutRecord(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	var in struct {
		Repo       string          `json:"repo"`
		Collection string          `json:"collection"`
		RKey       *string         `json:"rkey"`
		Validate   *bool           `json:"validate"`
		Record     json.RawMessage `json:"record"`
		SwapRecord swapField       `json:"swapRecord"`
		SwapCommit *string         `json:"swapCommit"`
	}
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	did, err := s.writableRepo(r.Context(), p, in.Repo)
	if err != nil {
		return err
	}
	coll, err := parseNSID("collection", in.Collection)
	if err != nil {
		return err
	}
	rkey, err := parseRKey("rkey", in.RKey, true)
	if err != nil {
		return err
	}
	rec, err := parseRecord("record", in.Record)
	if err != nil {
		return err
	}
	swapRecord, err := in.SwapRecord.swap("swapRecord")
	if err != nil {
		return err
	}
	swapCommit, err := parseCID("swapCommit", in.SwapCommit)
	if err != nil {
		return err
	}
	out, err := s.deps.Repos.ApplyWrites(r.Context(), did, []repo.Write{{Action: repo.Upsert, Collection: coll, RKey: rkey, Record: rec, SwapRecord: swapRecord}},
		repo.Options{Validate: in.Validate, SwapCommit: swapCommit})
	if err != nil {
		return err
	}
	res := out.Results[0]
	return writeJSON(w, writeOutput{URI: res.URI.String(), CID: res.CID.String(), Commit: commitOf(out), ValidationStatus: res.ValidationStatus})
}

// handleRepoDeleteRecord serves com.atproto.repo.deleteRecord. Deleting an
// absent record is a no-op answered without a commit, as the reference PDS
// does, unless swapRecord says the record should exist.
func (s *Server) handleRepoDeleteRecord(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	var in struct {
		Repo       string  `json:"repo"`
		Collection string  `json:"collection"`
		RKey       *string `json:"rkey"`
		SwapRecord *string `json:"swapRecord"`
		SwapCommit *string `json:"swapCommit"`
	}
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	did, err := s.writableRepo(r.Context(), p, in.Repo)
	if err != nil {
		return err
	}
	coll, err := parseNSID("collection", in.Collection)
	if err != nil {
		return err
	}
	rkey, err := parseRKey("rkey", in.RKey, true)
	if err != nil {
		return err
	}
	var swapRecord *repo.Swap
	if in.SwapRecord != nil {
		c, err := parseCID("swapRecord", in.SwapRecord)
		if err != nil {
			return err
		}
		swapRecord = &repo.Swap{CID: c}
	}
	swapCommit, err := parseCID("swapCommit", in.SwapCommit)
	if err != nil {
		return err
	}
	out, err := s.deps.Repos.ApplyWrites(r.Context(), did, []repo.Write{{Action: repo.Delete, Collection: coll, RKey: rkey, SwapRecord: swapRecord}},
		repo.Options{SwapCommit: swapCommit, AllowMissingDelete: true})
	if err != nil {
		return err
	}
	return writeJSON(w, struct {
		Commit *commitMeta `json:"commit,omitempty"`
	}{commitOf(out)})
}

const (
	typeCreate       = "com.atproto.repo.applyWrites#create"
	typeUpdate       = "com.atproto.repo.applyWrites#update"
	typeDelete       = "com.atproto.repo.applyWrites#delete"
	typeCreateResult = "com.atproto.repo.applyWrites#createResult"
	typeUpdateResult = "com.atproto.repo.applyWrites#updateResult"
	typeDeleteResult = "com.atproto.repo.applyWrites#deleteResult"
)

// handleRepoApplyWrites serves com.atproto.repo.applyWrites: up to 200
// writes applied as one commit, all or nothing.
func (s *Server) handleRepoApplyWrites(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	var in struct {
		Repo     string `json:"repo"`
		Validate *bool  `json:"validate"`
		Writes   []struct {
			Type       string          `json:"$type"`
			Collection string          `json:"collection"`
			RKey       *string         `json:"rkey"`
			Value      json.RawMessage `json:"value"`
		} `json:"writes"`
		SwapCommit *string `json:"swapCommit"`
	}
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	did, err := s.writableRepo(r.Context(), p, in.Repo)
	if err != nil {
		return err
	}
	if in.Writes == nil {
		return pdserr.New(pdserr.InvalidRequest, "Input must have the property \"writes\"")
	}
	if len(in.Writes) > repo.MaxWrites {
		return pdserr.New(pdserr.InvalidRequest, "Too many writes. Max: %d", repo.MaxWrites)
	}
	swapCommit, err := parseCID("swapCommit", in.SwapCommit)
	if err != nil {
		return err
	}
	writes := make([]repo.Write, len(in.Writes))
	for i, wr := range in.Writes {
		prefix := func(err error) error {
			if pe, ok := pdserr.As(err); ok {
				return pdserr.New(pe.Name, "Write %d: %s", i, pe.Message)
			}
			return err
		}
		var action repo.Action
		switch wr.Type {
		case typeCreate:
			action = repo.Create
		case typeUpdate:
			action = repo.Update
		case typeDelete:
			action = repo.Delete
		default:
			return pdserr.New(pdserr.InvalidRequest, "Write %d: unknown $type %q", i, wr.Type)
		}
		coll, err := parseNSID("collection", wr.Collection)
		if err != nil {
			return prefix(err)
		}
		rkey, err := parseRKey("rkey", wr.RKey, action != repo.Create)
		if err != nil {
			return prefix(err)
		}
		writes[i] = repo.Write{Action: action, Collection: coll, RKey: rkey}
		if action != repo.Delete {
			if writes[i].Record, err = parseRecord("value", wr.Value); err != nil {
				return prefix(err)
			}
		}
	}
	out, err := s.deps.Repos.ApplyWrites(r.Context(), did, writes, repo.Options{Validate: in.Validate, SwapCommit: swapCommit})
	if err != nil {
		return err
	}
	type result struct {
		Type             string `json:"$type"`
		URI              string `json:"uri,omitempty"`
		CID              string `json:"cid,omitempty"`
		ValidationStatus string `json:"validationStatus,omitempty"`
	}
	results := make([]result, len(out.Results))
	for i, res := range out.Results {
		switch res.Action {
		case repo.Delete:
			results[i] = result{Type: typeDeleteResult}
		default:
			t := typeCreateResult
			if res.Action == repo.Update {
				t = typeUpdateResult
			}
			results[i] = result{Type: t, URI: res.URI.String(), CID: res.CID.String(), ValidationStatus: res.ValidationStatus}
		}
	}
	return writeJSON(w, struct {
		Commit  *commitMeta `json:"commit,omitempty"`
		Results []result    `json:"results"`
	}{commitOf(out), results})
}

// readableRepo resolves the repo named in a read.
func (s *Server) readableRepo(ctx context.Context, r *http.Request) (account.Account, error) {
	id, err := queryString(r, "repo", true)
	if err != nil {
		return account.Account{}, err
	}
	if _, err := syntax.ParseAtIdentifier(id); err != nil {
		return account.Account{}, pdserr.New(pdserr.InvalidRequest, "Error: repo must be a valid did or a handle")
	}
	return s.deps.Accounts.Resolve(ctx, id)
}

// handleRepoGetRecord serves com.atproto.repo.getRecord.
func (s *Server) handleRepoGetRecord(w http.ResponseWriter, r *http.Request, _ *auth.Principal) error {
	a, err := s.readableRepo(r.Context(), r)
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
	var want *cid.Cid
	if v := queryValue(r, "cid"); v != "" {
		c, err := cid.Decode(v)
		if err != nil {
			return pdserr.New(pdserr.InvalidRequest, "Error: cid must be a cid string")
		}
		want = &c
	}
	// The value is transcoded from the stored CBOR into a pooled buffer
	// and the response assembled around it: no map, no reflection.
	bp := responseBufs.Get().(*[]byte)
	defer responseBufs.Put(bp)
	buf, ref, err := s.deps.Repos.AppendRecordJSON(r.Context(), append((*bp)[:0], `{"value":`...), a.DID, coll, rkey, want)
	if err != nil {
		return err
	}
	buf = append(buf, `,"uri":`...)
	buf = atjson.AppendString(buf, []byte(ref.URI))
	buf = append(buf, `,"cid":"`...)
	buf = append(buf, ref.CID.String()...)
	buf = append(buf, "\"}\n"...)
	if cap(buf) <= maxPooledResponse {
		*bp = buf
	}
	return writeRawJSON(w, buf)
}

// responseBufs holds the buffers getRecord responses are assembled in.
var responseBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// maxPooledResponse keeps a rare huge record from pinning its buffer.
const maxPooledResponse = 64 << 10

// writeRawJSON writes an already encoded JSON body.
func writeRawJSON(w http.ResponseWriter, body []byte) error {
	h := w.Header()
	h["Content-Type"] = jsonContentType
	h["Cache-Control"] = noStore
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	if _, err := w.Write(body); err != nil {
		return errClientGone
	}
	return nil
}

var (
	jsonContentType = []string{"application/json; charset=utf-8"}
	noStore         = []string{"no-store"}
)

type recordJSON struct {
	URI   string         `json:"uri"`
	CID   string         `json:"cid"`
	Value map[string]any `json:"value"`
}

// handleRepoListRecords serves com.atproto.repo.listRecords.
func (s *Server) handleRepoListRecords(w http.ResponseWriter, r *http.Request, _ *auth.Principal) error {
	a, err := s.readableRepo(r.Context(), r)
	if err != nil {
		return err
	}
	coll, err := queryNSID(r, "collection")
	if err != nil {
		return err
	}
	limit, err := queryInt(r, "limit", 50, 1, 100)
	if err != nil {
		return err
	}
	reverse, err := queryBool(r, "reverse")
	if err != nil {
		return err
	}
	cursor := r.URL.Query().Get("cursor")
	if cursor != "" {
		if _, err := syntax.ParseRecordKey(cursor); err != nil {
			return pdserr.New(pdserr.InvalidRequest, "Malformed cursor")
		}
	}
	recs, next, err := s.deps.Repos.ListRecords(r.Context(), a.DID, repo.ListQuery{Collection: coll, Limit: limit, Cursor: cursor, Reverse: reverse})
	if err != nil {
		return err
	}
	out := struct {
		Cursor  string       `json:"cursor,omitempty"`
		Records []recordJSON `json:"records"`
	}{Cursor: next, Records: make([]recordJSON, 0, len(recs))}
	for _, rec := range recs {
		out.Records = append(out.Records, recordJSON{URI: rec.URI.String(), CID: rec.CID.String(), Value: rec.Value})
	}
	return writeJSON(w, out)
}

// handleRepoDescribeRepo serves com.atproto.repo.describeRepo.
func (s *Server) handleRepoDescribeRepo(w http.ResponseWriter, r *http.Request, _ *auth.Principal) error {
	a, err := s.readableRepo(r.Context(), r)
	if err != nil {
		return err
	}
	doc, err := s.didDocument(r.Context(), a)
	if err != nil {
		return err
	}
	colls, err := s.deps.Repos.Collections(r.Context(), a.DID)
	if err != nil {
		return err
	}
	names := make([]string, len(colls))
	for i, c := range colls {
		names[i] = c.String()
	}
	correct := true
	if s.deps.HandleCheck != nil {
		correct = s.deps.HandleCheck(r.Context(), a.Handle, a.DID)
	}
	return writeJSON(w, struct {
		Handle          string   `json:"handle"`
		DID             string   `json:"did"`
		DIDDoc          any      `json:"didDoc"`
		Collections     []string `json:"collections"`
		HandleIsCorrect bool     `json:"handleIsCorrect"`
	}{strings.ToLower(a.Handle.String()), a.DID.String(), doc, names, correct})
}
