package integrity

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/ipfs/go-cid"
	car "github.com/ipld/go-car"
)

// decodeEvent decodes a stored event body and, for #commit and #sync,
// returns the commit it announces.
func decodeEvent(typ string, payload []byte) (commitRef, error) {
	r := bytes.NewReader(payload)
	switch typ {
	case "commit":
		var ev comatproto.SyncSubscribeRepos_Commit
		if err := ev.UnmarshalCBOR(r); err != nil {
			return commitRef{}, fmt.Errorf("does not decode: %w", err)
		}
		return commitRef{did: ev.Repo, commit: cid.Cid(ev.Commit), rev: ev.Rev}, nil
	case "sync":
		var ev comatproto.SyncSubscribeRepos_Sync
		if err := ev.UnmarshalCBOR(r); err != nil {
			return commitRef{}, fmt.Errorf("does not decode: %w", err)
		}
		cr, err := car.NewCarReader(bytes.NewReader(ev.Blocks))
		if err != nil || len(cr.Header.Roots) != 1 {
			return commitRef{}, fmt.Errorf("#sync blocks are not a CAR with one root")
		}
		return commitRef{did: ev.Did, commit: cr.Header.Roots[0], rev: ev.Rev}, nil
	case "identity":
		var ev comatproto.SyncSubscribeRepos_Identity
		if err := ev.UnmarshalCBOR(r); err != nil {
			return commitRef{}, fmt.Errorf("does not decode: %w", err)
		}
		return commitRef{did: ev.Did}, nil
	case "account":
		var ev comatproto.SyncSubscribeRepos_Account
		if err := ev.UnmarshalCBOR(r); err != nil {
			return commitRef{}, fmt.Errorf("does not decode: %w", err)
		}
		return commitRef{did: ev.Did}, nil
	}
	return commitRef{}, fmt.Errorf("unknown event type %q", typ)
}

// logEvidence is what the retained firehose log says about one
// repository: the record changes of its commits in order, and every block
// the events carried (commits, records), checked against their CIDs.
type logEvidence struct {
	changes []change
	blocks  map[string][]byte // CID bytes -> data
}

type change struct {
	key string
	cid *cid.Cid // nil: deleted
	rev string
}

// readLog collects the evidence of did's retained events up to rev.
func readLog(ctx context.Context, st Store, did, upTo string) (*logEvidence, error) {
	ev := &logEvidence{blocks: map[string][]byte{}}
	err := st.EachEvent(ctx, func(_ int64, evDID, typ string, payload []byte) error {
		if evDID != did {
			return nil
		}
		var carBytes []byte
		switch typ {
		case "commit":
			var c comatproto.SyncSubscribeRepos_Commit
			if err := c.UnmarshalCBOR(bytes.NewReader(payload)); err != nil {
				return nil
			}
			if c.Rev > upTo {
				return nil
			}
			for _, op := range c.Ops {
				ch := change{key: op.Path, rev: c.Rev}
				if op.Cid != nil && op.Action != "delete" {
					v := cid.Cid(*op.Cid)
					ch.cid = &v
				}
				ev.changes = append(ev.changes, ch)
			}
			carBytes = c.Blocks
		case "sync":
			var s comatproto.SyncSubscribeRepos_Sync
			if err := s.UnmarshalCBOR(bytes.NewReader(payload)); err != nil {
				return nil
			}
			carBytes = s.Blocks
		default:
			return nil
		}
		cr, err := car.NewCarReader(bytes.NewReader(carBytes))
		if err != nil {
			return nil
		}
		for {
			b, err := cr.Next()
			if errors.Is(err, io.EOF) || err != nil {
				break
			}
			if hashes(b.Cid(), b.RawData()) {
				ev.blocks[string(b.Cid().Bytes())] = b.RawData()
			}
		}
		return nil
	})
	return ev, err
}
