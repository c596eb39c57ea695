package repo

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/bluesky-social/indigo/atproto/repo/mst"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	car "github.com/ipld/go-car"
	carutil "github.com/ipld/go-car/util"
	"github.com/multiformats/go-multihash"

	"stratus/internal/pdserr"
)

// maxMSTDepth bounds how deep an imported tree may nest. Real trees are a
// handful of layers deep (a layer per two leading zero bits of a key's
// hash); the bound keeps a hostile CAR from driving indigo's recursive
// loader into a huge stack.
const maxMSTDepth = 64

// carIndex locates the blocks of a CAR file without holding them in memory:
// each block's CID maps to where its bytes lie in the file. Every block is
// hashed while indexing, so bytes read back later match their CID.
type carIndex struct {
	r     io.ReaderAt
	roots []cid.Cid
	spans map[cid.Cid]span
}

type span struct {
	off int64
	n   int
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// invalidRepo is the error of a CAR that cannot be imported.
func invalidRepo(format string, args ...any) error {
	return pdserr.New(pdserr.InvalidRepo, format, args...)
}

// indexCAR reads the CARv1 in the first size bytes of r with go-car's
// framing, checks every block against its CID (SHA-256 only, as atproto
// requires) and returns where each block lies.
func indexCAR(r io.ReaderAt, size int64) (*carIndex, error) {
	cr := &countingReader{r: io.NewSectionReader(r, 0, size)}
	br := bufio.NewReaderSize(cr, 64<<10)
	h, err := car.ReadHeader(br)
	if err != nil {
		if size == 0 {
			return nil, invalidRepo("Empty CAR file")
		}
		return nil, invalidRepo("Invalid CAR header: %v", err)
	}
	if h.Version != 1 {
		return nil, invalidRepo("Unsupported CAR version %d (expected 1)", h.Version)
	}
	idx := &carIndex{r: r, roots: h.Roots, spans: map[cid.Cid]span{}}
	for {
		if _, err := br.Peek(1); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, fmt.Errorf("read car: %w", err)
		}
		c, data, err := carutil.ReadNode(br)
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, invalidRepo("The CAR file is truncated")
		}
		if err != nil {
			return nil, invalidRepo("Invalid CAR block: %v", err)
		}
		pre := c.Prefix()
		if pre.MhType != multihash.SHA2_256 {
			return nil, invalidRepo("Block %s is not hashed with SHA-256", c)
		}
		if sum, err := pre.Sum(data); err != nil || !sum.Equals(c) {
			return nil, invalidRepo("Block %s does not match its CID", c)
		}
		pos := cr.n - int64(br.Buffered())
		idx.spans[c] = span{off: pos - int64(len(data)), n: len(data)}
	}
	return idx, nil
}

// errMissingBlock is returned for a block the CAR does not hold.
var errMissingBlock = errors.New("block missing from CAR")

// bytes reads one block back from the file.
func (x *carIndex) bytes(c cid.Cid) ([]byte, error) {
	s, ok := x.spans[c]
	if !ok {
		return nil, fmt.Errorf("%w: %s", errMissingBlock, c)
	}
	buf := make([]byte, s.n)
	if _, err := x.r.ReadAt(buf, s.off); err != nil {
		return nil, fmt.Errorf("read block %s: %w", c, err)
	}
	return buf, nil
}

// Get implements indigo's mst.MSTBlockSource.
func (x *carIndex) Get(_ context.Context, c cid.Cid) (blocks.Block, error) {
	data, err := x.bytes(c)
	if err != nil {
		return nil, err
	}
	return blocks.NewBlockWithCid(data, c)
}

// checkTreeShape walks the MST nodes under root before indigo loads them:
// every node must be in the CAR, no node may be reached twice (a tree
// never shares a subtree, and a shared one would let a small CAR expand
// exponentially), and nesting stays within maxMSTDepth.
func (x *carIndex) checkTreeShape(root cid.Cid) error {
	seen := map[cid.Cid]bool{}
	var walk func(c cid.Cid, depth int) error
	walk = func(c cid.Cid, depth int) error {
		if depth > maxMSTDepth {
			return invalidRepo("The MST is nested more than %d levels deep", maxMSTDepth)
		}
		if seen[c] {
			return invalidRepo("The MST reaches node %s twice", c)
		}
		seen[c] = true
		data, err := x.bytes(c)
		if errors.Is(err, errMissingBlock) {
			return invalidRepo("The MST is incomplete: node %s is missing", c)
		}
		if err != nil {
			return err
		}
		nd, err := mst.NodeDataFromCBOR(bytes.NewReader(data))
		if err != nil {
			return invalidRepo("MST node %s does not decode: %v", c, err)
		}
		if nd.Left != nil {
			if err := walk(*nd.Left, depth+1); err != nil {
				return err
			}
		}
		for _, e := range nd.Entries {
			if e.Right != nil {
				if err := walk(*e.Right, depth+1); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return walk(root, 0)
}
