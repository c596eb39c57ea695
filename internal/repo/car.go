package repo

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
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
	// Sized up front: a firehose event's CAR is built on every commit, and
	// growing the buffer from empty allocated twice its size again.
	size := 64 + root.ByteLen()
	for _, b := range blocks {
		size += binary.MaxVarintLen64 + b.CID.ByteLen() + len(b.Data)
	}
	buf := bytes.NewBuffer(make([]byte, 0, size))
	w := carWriter{w: buf}
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
// commit: the commit block first, then the MST nodes, then the records.
// With since set, only records written after that revision are included
// (the nodes always are, so the result still proves its contents). The
// account lock is held only while the nodes are encoded, never while the
// client reads.
func (s *Service) ExportCAR(ctx context.Context, did syntax.DID, since string, w io.Writer) error {
	st := s.state(did)
	st.mu.Lock()
	locked := true
	unlock := func() {
		if locked {
			locked = false
			st.mu.Unlock()
		}
	}
	defer unlock()
	if err := s.load(ctx, did, st); err != nil {
		return err
	}
	bw := bufio.NewWriterSize(w, 64<<10)
	cw := carWriter{w: bw}
	err := s.store.Export(ctx, did, since, func(h Head, commit Block) error {
		if !h.Commit.Equals(st.head.Commit) {
			return fmt.Errorf("export: stored head %s differs from loaded head %s", h.Commit, st.head.Commit)
		}
		nodes, err := encodeNodes(st.tree.Root, nil)
		if err != nil {
			return err
		}
		// The read snapshot is open: later commits cannot change what the
		// rest of the export sees, so writers may proceed.
		unlock()
		if err := cw.header(h.Commit); err != nil {
			return err
		}
		if err := cw.block(commit); err != nil {
			return err
		}
		for _, n := range nodes {
			if err := cw.block(n); err != nil {
				return err
			}
		}
		return nil
	}, cw.block)
	if err != nil {
		if errors.Is(err, ErrNoRepo) {
			return pdserr.Wrap(err, pdserr.RepoNotFound, "Could not find repo for DID: "+did.String())
		}
		return err
	}
	return bw.Flush()
}

// encodeNodes appends the encoded blocks of the subtree under n, parents
// before children.
func encodeNodes(n *mst.Node, out []Block) ([]Block, error) {
	b, err := encodeNode(n)
	if err != nil {
		return nil, err
	}
	out = append(out, b)
	for _, e := range n.Entries {
		if e.Child != nil {
			if out, err = encodeNodes(e.Child, out); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// encodeNode encodes one MST node whose CID is already computed.
func encodeNode(n *mst.Node) (Block, error) {
	if n.CID == nil || n.Dirty {
		return Block{}, fmt.Errorf("encode mst node: tree has uncomputed nodes")
	}
	nd := n.NodeData()
	var buf bytes.Buffer
	if err := nd.MarshalCBOR(&buf); err != nil {
		return Block{}, fmt.Errorf("encode mst node: %w", err)
	}
	return Block{CID: *n.CID, Data: buf.Bytes()}, nil
}

// Blocks returns a CAR rooted at the current commit with the requested
// blocks, which may be the commit, MST nodes or records. Blocks the
// repository does not hold make the whole request fail with their CIDs
// listed, so callers never mistake a partial answer for a complete one.
func (s *Service) Blocks(ctx context.Context, did syntax.DID, cids []cid.Cid) ([]byte, error) {
	st := s.state(did)
	st.mu.Lock()
	defer st.mu.Unlock()
	if err := s.load(ctx, did, st); err != nil {
		return nil, err
	}
	if st.nodes == nil {
		st.nodes = map[cid.Cid]*mst.Node{}
		indexNodes(st.tree.Root, st.nodes)
	}
	out := make([]Block, 0, len(cids))
	var missing []string
	for _, c := range cids {
		if n, ok := st.nodes[c]; ok {
			b, err := encodeNode(n)
			if err != nil {
				return nil, err
			}
			out = append(out, b)
			continue
		}
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
	return writeCAR(st.head.Commit, out)
}

func indexNodes(n *mst.Node, into map[cid.Cid]*mst.Node) {
	if n.CID != nil {
		into[*n.CID] = n
	}
	for _, e := range n.Entries {
		if e.Child != nil {
			indexNodes(e.Child, into)
		}
	}
}

// RecordProof returns a CAR rooted at the current commit holding the commit,
// the MST nodes on the path to collection/rkey (which prove the record's
// presence or absence) and the record itself when it exists.
func (s *Service) RecordProof(ctx context.Context, did syntax.DID, collection syntax.NSID, rkey syntax.RecordKey) ([]byte, error) {
	st := s.state(did)
	st.mu.Lock()
	defer st.mu.Unlock()
	if err := s.load(ctx, did, st); err != nil {
		return nil, err
	}
	commitData, err := s.store.Block(ctx, did, st.head.Commit)
	if err != nil {
		return nil, fmt.Errorf("read commit: %w", err)
	}
	out := []Block{{CID: st.head.Commit, Data: commitData}}
	key := []byte(collection.String() + "/" + rkey.String())
	for n := st.tree.Root; n != nil; {
		b, err := encodeNode(n)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
		next, value := descendNode(n, key)
		if value != nil {
			rec, err := s.store.Block(ctx, did, *value)
			if err != nil {
				return nil, fmt.Errorf("read record: %w", err)
			}
			out = append(out, Block{CID: *value, Data: rec})
			break
		}
		n = next
	}
	return writeCAR(st.head.Commit, out)
}

// descendNode finds key in one MST node: it returns the value when the key
// is an entry of the node, or otherwise the child subtree that would hold it
// (nil when there is none).
func descendNode(n *mst.Node, key []byte) (child *mst.Node, value *cid.Cid) {
	var left *mst.Node
	for _, e := range n.Entries {
		if e.IsChild() {
			left = e.Child
			continue
		}
		switch c := bytes.Compare(key, e.Key); {
		case c == 0:
			return nil, e.Value
		case c < 0:
			return left, nil
		}
		left = nil
	}
	return left, nil
}

// SyncCAR returns a CAR holding only the current commit block of did and the
// commit's revision: the body of a #sync event.
func (s *Service) SyncCAR(ctx context.Context, did syntax.DID) ([]byte, syntax.TID, error) {
	// Under the account lock, so no commit replaces (and deletes) the
	// commit block between reading the head and reading the block.
	st := s.state(did)
	st.mu.Lock()
	defer st.mu.Unlock()
	if err := s.load(ctx, did, st); err != nil {
		return nil, "", err
	}
	data, err := s.store.Block(ctx, did, st.head.Commit)
	if err != nil {
		return nil, "", fmt.Errorf("read commit: %w", err)
	}
	car, err := writeCAR(st.head.Commit, []Block{{CID: st.head.Commit, Data: data}})
	return car, st.head.Rev, err
}
