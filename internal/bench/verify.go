package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/identity"
	atrepo "github.com/bluesky-social/indigo/atproto/repo"
	"github.com/bluesky-social/indigo/atproto/repo/mst"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"
	"github.com/ipld/go-car"
)

// exportCheck is what verifying a getRepo CAR established.
type exportCheck struct {
	Blocks    int
	Records   int
	Rev       string
	Signature bool // the commit signature was checked against the DID document's key
}

// signingKey returns the atproto signing key of a DID document (as
// createSession returns it), or nil when there is none to use.
func signingKey(doc json.RawMessage) (atcrypto.PublicKey, error) {
	if len(doc) == 0 || string(doc) == "null" {
		return nil, nil
	}
	var d identity.DIDDocument
	if err := json.Unmarshal(doc, &d); err != nil {
		return nil, fmt.Errorf("DID document: %w", err)
	}
	ident := identity.ParseIdentity(&d)
	k, err := ident.PublicKey()
	if errors.Is(err, identity.ErrKeyNotDeclared) {
		return nil, nil
	}
	return k, err
}

// resolveKey resolves did (did:plc through the PLC directory, did:web over
// HTTPS) and returns its atproto signing key.
func resolveKey(ctx context.Context, did, plcURL string) (atcrypto.PublicKey, error) {
	d, err := syntax.ParseDID(did)
	if err != nil {
		return nil, err
	}
	if plcURL == "" {
		plcURL = "https://plc.directory"
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	dir := &identity.BaseDirectory{PLCURL: plcURL, SkipHandleVerification: true}
	ident, err := dir.LookupDID(ctx, d)
	if err != nil {
		return nil, err
	}
	return ident.PublicKey()
}

// verifyExport checks a full-repository CAR with indigo: every block
// hashes to its CID, the root is a structurally valid commit of did whose
// signature verifies against key (when known), its MST loads completely,
// every record it names is present, and rebuilding the MST from its
// entries gives the commit's data root again (so the tree is canonical).
func verifyExport(ctx context.Context, data []byte, did string, key atcrypto.PublicKey) (exportCheck, error) {
	var out exportCheck
	cr, err := car.NewCarReader(bytes.NewReader(data))
	if err != nil {
		return out, fmt.Errorf("read CAR header: %w", err)
	}
	for {
		blk, err := cr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return out, fmt.Errorf("read CAR block %d: %w", out.Blocks, err)
		}
		got, err := blk.Cid().Prefix().Sum(blk.RawData())
		if err != nil {
			return out, fmt.Errorf("hash block %s: %w", blk.Cid(), err)
		}
		if !got.Equals(blk.Cid()) {
			return out, fmt.Errorf("block %s hashes to %s", blk.Cid(), got)
		}
		out.Blocks++
	}
	commit, r, err := atrepo.LoadRepoFromCAR(ctx, bytes.NewReader(data))
	if err != nil {
		return out, fmt.Errorf("load repository: %w", err)
	}
	out.Rev = commit.Rev
	if commit.DID != did {
		return out, fmt.Errorf("commit is for %s, want %s", commit.DID, did)
	}
	if key != nil {
		if err := commit.VerifySignature(key); err != nil {
			return out, fmt.Errorf("commit signature: %w", err)
		}
		out.Signature = true
	}
	if r.MST.IsPartial() {
		return out, errors.New("the CAR does not hold the whole MST")
	}
	if err := r.MST.Verify(); err != nil {
		return out, fmt.Errorf("MST structure: %w", err)
	}
	entries := map[string]cid.Cid{}
	if err := r.MST.WriteToMap(entries); err != nil {
		return out, fmt.Errorf("walk MST: %w", err)
	}
	for k, v := range entries {
		if _, err := r.RecordStore.Get(ctx, v); err != nil {
			return out, fmt.Errorf("record %s (%s) is missing from the CAR", k, v)
		}
	}
	out.Records = len(entries)
	rebuilt, err := mst.LoadTreeFromMap(entries)
	if err != nil {
		return out, fmt.Errorf("rebuild MST: %w", err)
	}
	root, err := rebuilt.RootCID()
	if err != nil {
		return out, fmt.Errorf("rebuild MST: %w", err)
	}
	if !root.Equals(commit.Data) {
		return out, fmt.Errorf("MST rebuilt from the records has root %s, the commit says %s", root, commit.Data)
	}
	return out, nil
}
