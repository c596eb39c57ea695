package repo

import (
	"context"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
)

// recorder collects the blocks indigo's MST writes during a commit. It
// implements the full blockstore interface that WriteDiffBlocks asks for;
// only Put and PutMany are used, so the rest answer from what was put.
type recorder struct {
	blocks []Block
	seen   map[cid.Cid]struct{}
}

func newRecorder() *recorder { return &recorder{seen: map[cid.Cid]struct{}{}} }

func (r *recorder) Put(_ context.Context, b blocks.Block) error {
	if _, ok := r.seen[b.Cid()]; ok {
		return nil
	}
	r.seen[b.Cid()] = struct{}{}
	r.blocks = append(r.blocks, Block{CID: b.Cid(), Data: b.RawData()})
	return nil
}

func (r *recorder) PutMany(ctx context.Context, bs []blocks.Block) error {
	for _, b := range bs {
		if err := r.Put(ctx, b); err != nil {
			return err
		}
	}
	return nil
}

func (r *recorder) Has(_ context.Context, c cid.Cid) (bool, error) {
	_, ok := r.seen[c]
	return ok, nil
}

func (r *recorder) Get(_ context.Context, c cid.Cid) (blocks.Block, error) {
	for _, b := range r.blocks {
		if b.CID.Equals(c) {
			return blocks.NewBlockWithCid(b.Data, c)
		}
	}
	return nil, ipld.ErrNotFound{Cid: c}
}

func (r *recorder) GetSize(ctx context.Context, c cid.Cid) (int, error) {
	b, err := r.Get(ctx, c)
	if err != nil {
		return 0, err
	}
	return len(b.RawData()), nil
}

func (r *recorder) DeleteBlock(context.Context, cid.Cid) error { return nil }

func (r *recorder) AllKeysChan(context.Context) (<-chan cid.Cid, error) {
	ch := make(chan cid.Cid)
	close(ch)
	return ch, nil
}

func (r *recorder) HashOnRead(bool) {}
