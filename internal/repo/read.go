package repo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/bluesky-social/indigo/atproto/atdata"
	"github.com/bluesky-social/indigo/atproto/repo/mst"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"

	"stratus/internal/atjson"
	"stratus/internal/pdserr"
)

// RecordView is a record as the read endpoints return it.
type RecordView struct {
	URI   syntax.ATURI
	CID   cid.Cid
	Value map[string]any
}

// GetRecord returns one record. When want is set, the record must have that
// CID (the reference PDS answers RecordNotFound otherwise).
func (s *Service) GetRecord(ctx context.Context, did syntax.DID, collection syntax.NSID, rkey syntax.RecordKey, want *cid.Cid) (*RecordView, error) {
	uri := syntax.ATURI(fmt.Sprintf("at://%s/%s/%s", did, collection, rkey))
	r, err := s.store.Record(ctx, did, collection, rkey)
	if errors.Is(err, ErrBlockNotFound) || (err == nil && want != nil && !want.Equals(r.CID)) {
		return nil, pdserr.New(pdserr.RecordNotFound, "Could not locate record: %s", uri)
	}
	if err != nil {
		return nil, fmt.Errorf("read record: %w", err)
	}
	val, err := DecodeRecord(r.Data)
	if err != nil {
		return nil, fmt.Errorf("decode record %s: %w", uri, err)
	}
	return &RecordView{URI: uri, CID: r.CID, Value: val}, nil
}

// RecordRef names a stored record version.
type RecordRef struct {
	URI syntax.ATURI
	CID cid.Cid
}

// AppendRecordJSON is GetRecord with the value rendered as the JSON of the
// atproto data model and appended to dst, so a caller can assemble the
// response in one reused buffer. The stored DAG-CBOR is transcoded straight
// to JSON; records of a shape the transcoder leaves alone take the
// decode-then-encode path, with the same JSON value.
func (s *Service) AppendRecordJSON(ctx context.Context, dst []byte, did syntax.DID, collection syntax.NSID, rkey syntax.RecordKey, want *cid.Cid) ([]byte, RecordRef, error) {
	r, err := s.store.Record(ctx, did, collection, rkey)
	if errors.Is(err, ErrBlockNotFound) || (err == nil && want != nil && !want.Equals(r.CID)) {
		return dst, RecordRef{}, pdserr.New(pdserr.RecordNotFound, "Could not locate record: %s", recordURI(did, collection, rkey))
	}
	if err != nil {
		return dst, RecordRef{}, fmt.Errorf("read record: %w", err)
	}
	ref := RecordRef{URI: recordURI(did, collection, rkey), CID: r.CID}
	out, err := atjson.AppendRecord(dst, r.Data)
	if err == nil {
		return out, ref, nil
	}
	val, err := DecodeRecord(r.Data)
	if err != nil {
		return dst, RecordRef{}, fmt.Errorf("decode record %s: %w", ref.URI, err)
	}
	b, err := json.Marshal(val)
	if err != nil {
		return dst, RecordRef{}, fmt.Errorf("encode record %s: %w", ref.URI, err)
	}
	return append(dst, b...), ref, nil
}

func recordURI(did syntax.DID, collection syntax.NSID, rkey syntax.RecordKey) syntax.ATURI {
	return syntax.ATURI("at://" + string(did) + "/" + string(collection) + "/" + string(rkey))
}

// ListRecords returns a page of a collection and the cursor of the next page
// ("" when there is none). Pages are keyed by record key, so records written
// between two calls never cause a repeat or a skip.
func (s *Service) ListRecords(ctx context.Context, did syntax.DID, q ListQuery) ([]RecordView, string, error) {
	if q.Limit < 1 || q.Limit > 100 {
		return nil, "", pdserr.New(pdserr.InvalidRequest, "limit must be between 1 and 100")
	}
	want := q.Limit
	q.Limit++
	rows, err := s.store.ListRecords(ctx, did, q)
	if err != nil {
		return nil, "", fmt.Errorf("list records: %w", err)
	}
	more := len(rows) > want
	if more {
		rows = rows[:want]
	}
	out := make([]RecordView, 0, len(rows))
	for _, r := range rows {
		val, err := DecodeRecord(r.Data)
		if err != nil {
			return nil, "", fmt.Errorf("decode record %s/%s: %w", r.Collection, r.RKey, err)
		}
		out = append(out, RecordView{
			URI:   syntax.ATURI(fmt.Sprintf("at://%s/%s/%s", did, r.Collection, r.RKey)),
			CID:   r.CID,
			Value: val,
		})
	}
	cursor := ""
	if more && len(rows) > 0 {
		cursor = rows[len(rows)-1].RKey.String()
	}
	return out, cursor, nil
}

// Collections lists the collections of did's repository.
func (s *Service) Collections(ctx context.Context, did syntax.DID) ([]syntax.NSID, error) {
	return s.store.Collections(ctx, did)
}

// Stats counts the blocks (commit, MST nodes and records) and the records
// of did's repository.
func (s *Service) Stats(ctx context.Context, did syntax.DID) (blocks, records int64, err error) {
	st := s.state(did)
	st.mu.Lock()
	defer st.mu.Unlock()
	if err := s.load(ctx, did, st); err != nil {
		return 0, 0, err
	}
	stored, records, err := s.store.Stats(ctx, did)
	if err != nil {
		return 0, 0, err
	}
	nodes := map[cid.Cid]*mst.Node{}
	indexNodes(st.tree.Root, nodes)
	return stored + int64(len(nodes)), records, nil
}

// DecodeRecord decodes a stored record into the atproto data model, ready to
// be written as JSON. indigo decodes an empty byte string as a nil
// atdata.Bytes, which then neither marshals to JSON nor re-encodes to the
// same CBOR; such values are replaced with an empty, non-nil one.
func DecodeRecord(data []byte) (map[string]any, error) {
	val, err := atdata.UnmarshalCBOR(data)
	if err != nil {
		return nil, err
	}
	fixEmptyBytes(val)
	return val, nil
}

func fixEmptyBytes(v any) {
	switch t := v.(type) {
	case map[string]any:
		for k, x := range t {
			if b, ok := x.(atdata.Bytes); ok && b == nil {
				t[k] = atdata.Bytes{}
				continue
			}
			fixEmptyBytes(x)
		}
	case []any:
		for i, x := range t {
			if b, ok := x.(atdata.Bytes); ok && b == nil {
				t[i] = atdata.Bytes{}
				continue
			}
			fixEmptyBytes(x)
		}
	}
}
