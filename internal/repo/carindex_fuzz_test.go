package repo

import (
	"bytes"
	"testing"

	"github.com/ipfs/go-cid"
	car "github.com/ipld/go-car"
	carutil "github.com/ipld/go-car/util"
)

// FuzzImportCAR feeds untrusted bytes to the import's CAR indexer and tree
// checks: they may refuse anything but must never panic, and every block
// they accept must read back as the bytes its CID names.
func FuzzImportCAR(f *testing.F) {
	blk := []byte{0xa1, 0x61, 0x65, 0x80} // {"e": []}, an empty MST node
	c, _ := cborPrefix.Sum(blk)
	var seed bytes.Buffer
	car.WriteHeader(&car.CarHeader{Roots: []cid.Cid{c}, Version: 1}, &seed)
	carutil.LdWrite(&seed, c.Bytes(), blk)
	f.Add(seed.Bytes())
	f.Add(seed.Bytes()[:seed.Len()-2])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		idx, err := indexCAR(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return
		}
		for c := range idx.spans {
			b, err := idx.bytes(c)
			if err != nil {
				t.Fatalf("indexed block %s does not read back: %v", c, err)
			}
			if sum, err := c.Prefix().Sum(b); err != nil || !sum.Equals(c) {
				t.Fatalf("block %s reads back as other bytes", c)
			}
		}
		for _, r := range idx.roots {
			if _, err := loadImportedTree(idx, r); err != nil {
				continue
			}
		}
	})
}
