package identity

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
)

// ErrTombstoned is returned for a DID whose latest PLC operation is a
// tombstone: it can no longer be updated.
var ErrTombstoned = errors.New("did is tombstoned")

// CID returns the CID of the signed operation (DAG-CBOR, SHA-256), the
// value the next operation names as its prev.
func (op *Operation) CID() (string, error) {
	b, err := op.signedCBOR()
	if err != nil {
		return "", err
	}
	c, err := cid.NewPrefixV1(cid.DagCBOR, multihash.SHA2_256).Sum(b)
	if err != nil {
		return "", fmt.Errorf("plc op cid: %w", err)
	}
	return c.String(), nil
}

// Clone returns a deep copy of op.
func (op *Operation) Clone() *Operation {
	cp := *op
	cp.RotationKeys = append([]string{}, op.RotationKeys...)
	cp.AlsoKnownAs = append([]string{}, op.AlsoKnownAs...)
	cp.VerificationMethods = make(map[string]string, len(op.VerificationMethods))
	for k, v := range op.VerificationMethods {
		cp.VerificationMethods[k] = v
	}
	cp.Services = make(map[string]OpService, len(op.Services))
	for k, v := range op.Services {
		cp.Services[k] = v
	}
	if op.Prev != nil {
		p := *op.Prev
		cp.Prev = &p
	}
	return &cp
}

// NewUpdate builds the operation that follows prev with the fields change
// sets, signed by rotation (which must be one of prev's rotation keys for a
// directory to accept it).
func NewUpdate(prev *Operation, rotation atcrypto.PrivateKey, change func(*Operation)) (*Operation, error) {
	if prev == nil || prev.Type != OperationType {
		return nil, fmt.Errorf("build update op: previous operation is not a %s", OperationType)
	}
	prevCID, err := prev.CID()
	if err != nil {
		return nil, fmt.Errorf("build update op: %w", err)
	}
	op := prev.Clone()
	op.Sig = ""
	op.Prev = &prevCID
	if change != nil {
		change(op)
	}
	if err := op.Check(); err != nil {
		return nil, fmt.Errorf("build update op: %w", err)
	}
	if err := op.Sign(rotation); err != nil {
		return nil, fmt.Errorf("build update op: %w", err)
	}
	return op, nil
}

// Check validates the fields of an operation the way a directory does,
// without its signature: type, rotation keys, verification method keys,
// at:// handles and service URLs.
func (op *Operation) Check() error {
	if op.Type != OperationType {
		return fmt.Errorf("unsupported operation type %q", op.Type)
	}
	if err := checkRotationKeys(op.RotationKeys); err != nil {
		return err
	}
	for id, k := range op.VerificationMethods {
		if _, err := atcrypto.ParsePublicDIDKey(k); err != nil {
			return fmt.Errorf("verification method %q: %w", id, err)
		}
	}
	for id, s := range op.Services {
		if err := checkServiceURL(s.Endpoint); err != nil {
			return fmt.Errorf("service %q: %w", id, err)
		}
	}
	return nil
}

// WithHandle returns alsoKnownAs with at://<handle> first, replacing the
// previous at:// entries and keeping other URIs.
func WithHandle(aka []string, handle syntax.Handle) []string {
	out := []string{handleURI(handle)}
	for _, u := range aka {
		if !strings.HasPrefix(u, "at://") {
			out = append(out, u)
		}
	}
	return out
}

// VerifyUpdate checks that op is a well-formed update of prev, signed by
// one of prev's rotation keys.
func (op *Operation) VerifyUpdate(prev *Operation) error {
	if err := op.Check(); err != nil {
		return err
	}
	want, err := prev.CID()
	if err != nil {
		return err
	}
	if op.Prev == nil || *op.Prev != want {
		return errors.New("prev does not name the latest operation")
	}
	for _, k := range prev.RotationKeys {
		pub, err := atcrypto.ParsePublicDIDKey(k)
		if err != nil {
			continue
		}
		if op.VerifySignature(pub) == nil {
			return nil
		}
	}
	return errors.New("no rotation key of the previous operation signed it")
}

// LastOperation fetches the latest operation of did from the directory.
func (c *PLCClient) LastOperation(ctx context.Context, did syntax.DID) (*Operation, error) {
	resp, err := c.do(ctx, http.MethodGet, did.String()+"/log/last", did, nil)
	if err != nil {
		return nil, fmt.Errorf("fetch last plc op: %w", err)
	}
	defer resp.Body.Close()
	b, err := readLimited(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("fetch last plc op: %w", err)
	}
	var op Operation
	if err := json.NewDecoder(bytes.NewReader(b)).Decode(&op); err != nil {
		return nil, fmt.Errorf("fetch last plc op: decode: %w", err)
	}
	if op.Type == "plc_tombstone" {
		return nil, ErrTombstoned
	}
	if op.Type != OperationType {
		return nil, fmt.Errorf("fetch last plc op: unsupported type %q", op.Type)
	}
	return &op, nil
}
