package repo

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/bluesky-social/indigo/atproto/repo/mst"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"
	car "github.com/ipld/go-car"
	carutil "github.com/ipld/go-car/util"

	"stratus/internal/pdserr"
)

// writeCAR encodes a CARv1 with one root.
func writeCAR(root cid.Cid, blocks []Block) ([]byte, error) {
	var buf bytes.Buffer
	w := carWriter{w: &buf}
	if err := w.header(root); err != nil {
		return nil, err
	}
	for _, b := range blocks {
		if err := w.block(b); err != nil {
			return nil, err
		}
	}
	return buf.Bytes(), nil
}

type carWriter struct{ w io.Writer }

func (c carWriter) header(root cid.Cid) error {
	if err := car.WriteHeader(&car.CarHeader{Roots: []cid.Cid{root}, Version: 1}, c.w); err != nil {
		return fmt.Errorf("write car header: %w", err)
	}
	return nil
}

func (c carWriter) block(b Block) error {
	if err := carutil.LdWrite(c.w, b.CID.Bytes(), b.Data); err != nil {
		return fmt.Errorf("write car block: %w", err)
	}
	return nil
}

// ExportCAR streams did's repository as a CARv1 rooted at the current
// commit: the commit block first, then every MST node and record of the
// current tree. With since set, only blocks written after that revision are
// included. Nothing is buffered beyond one block.
func (s *Service) ExportCAR(ctx context.Context, did syntax.DID, since string, w io.Writer) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	cw := carWriter{w: bw}
	var commit cid.Cid
	err := s.store.Export(ctx, did, since, func(h Head) error {
		commit = h.Commit
		if err := cw.header(h.Commit); err != nil {
			return err
		}
		data, err := s.store.Block(ctx, did, h.Commit)
		if err != nil {
			return fmt.Errorf("read commit block: %w", err)
		}
		return cw.block(Block{CID: h.Commit, Data: data})
	}, func(b Block) error {
		if b.CID.Equals(commit) {
			return nil
		}
		return cw.block(b)
	})
	if err != nil {
		if errors.Is(err, ErrNoRepo) {
			return pdserr.Wrap(err, pdserr.RepoNotFound, "Could not find repo for DID: "+did.String())
		}
		return err
	}
	return bw.Flush()
}

// Blocks returns a CAR rooted at the current commit with the requested
// blocks. Blocks the repository does not hold make the whole request fail
// with their CIDs listed, so callers never mistake a partial answer for a
// complete one.
func (s *Service) Blocks(ctx context.Context, did syntax.DID, cids []cid.Cid) ([]byte, error) {
	head, err := s.Head(ctx, did)
	if err != nil {
		return nil, err
	}
	out := make([]Block, 0, len(cids))
	var missing []string
	for _, c := range cids {
		data, err := s.store.Block(ctx, did, c)
		if errors.Is(err, ErrBlockNotFound) {
			missing = append(missing, c.String())
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read block: %w", err)
		}
		out = append(out, Block{CID: c, Data: data})
	}
	if len(missing) > 0 {
		return nil, pdserr.New(pdserr.InvalidRequest, "Could not find cids: %s", strings.Join(missing, ", "))
	}
	return writeCAR(head.Commit, out)
}

// RecordProof returns a CAR rooted at the current commit holding the commit,
// the MST nodes on the path to collection/rkey (which prove the record's
// presence or absence) and the record itself when it exists.
func (s *Service) RecordProof(ctx context.Context, did syntax.DID, collection syntax.NSID, rkey syntax.RecordKey) ([]byte, error) {
	head, err := s.Head(ctx, did)
	if err != nil {
		return nil, err
	}
	commitData, err := s.store.Block(ctx, did, head.Commit)
	if err != nil {
		return nil, fmt.Errorf("read commit: %w", err)
	}
	out := []Block{{CID: head.Commit, Data: commitData}}
	key := []byte(collection.String() + "/" + rkey.String())
	next := &head.Data
	for next != nil {
		data, err := s.store.Block(ctx, did, *next)
		if err != nil {
			return nil, fmt.Errorf("read mst node: %w", err)
		}
		out = append(out, Block{CID: *next, Data: data})
		nd, err := mst.NodeDataFromCBOR(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("decode mst node: %w", err)
		}
		var value *cid.Cid
		next, value = descend(nd, key)
		if value != nil {
			rec, err := s.store.Block(ctx, did, *value)
			if err != nil {
				return nil, fmt.Errorf("read record: %w", err)
			}
			out = append(out, Block{CID: *value, Data: rec})
			break
		}
	}
	return writeCAR(head.Commit, out)
}

// descend finds key in one MST node: it returns the value when the key is
// an entry of the node, or otherwise the child subtree that would hold it.
func descend(nd *mst.NodeData, key []byte) (child *cid.Cid, value *cid.Cid) {
	var prev []byte
	child = nd.Left
	for _, e := range nd.Entries {
		k := make([]byte, 0, int(e.PrefixLen)+len(e.KeySuffix))
		if int(e.PrefixLen) <= len(prev) {
			k = append(k, prev[:e.PrefixLen]...)
		}
		k = append(k, e.KeySuffix...)
		prev = k
		switch c := bytes.Compare(key, k); {
		case c == 0:
			v := e.Value
			return nil, &v
		case c < 0:
			return child, nil
		}
		child = e.Right
	}
	return child, nil
}

// SyncCAR returns a CAR holding only the current commit block of did and the
// commit's revision: the body of a #sync event.
func (s *Service) SyncCAR(ctx context.Context, did syntax.DID) ([]byte, syntax.TID, error) {
	head, err := s.Head(ctx, did)
	if err != nil {
		return nil, "", err
	}
	data, err := s.store.Block(ctx, did, head.Commit)
	if err != nil {
		return nil, "", fmt.Errorf("read commit: %w", err)
	}
	car, err := writeCAR(head.Commit, []Block{{CID: head.Commit, Data: data}})
	return car, head.Rev, err
}
