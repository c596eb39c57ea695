package identity

import (
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/atdata"
	"github.com/bluesky-social/indigo/atproto/syntax"
)

// OperationType is the "type" of a regular PLC operation (as opposed to a
// tombstone or a legacy "create" operation).
const OperationType = "plc_operation"

// MaxRotationKeys is the most rotation keys a PLC operation may list.
const MaxRotationKeys = 5

// didPLCIdentifierLen is the length of the method-specific part of a did:plc.
const didPLCIdentifierLen = 24

// OpService is one entry of the "services" map of a PLC [Operation].
type OpService struct {
	// Type is the service type, e.g. "AtprotoPersonalDataServer".
	Type string `json:"type"`
	// Endpoint is the service URL.
	Endpoint string `json:"endpoint"`
}

// Operation is a signed (or not yet signed) PLC operation of type
// "plc_operation". Its JSON form is what a PLC directory accepts and serves;
// its DAG-CBOR form (see the spec) is what gets signed and hashed.
//
// Nil slices and maps are encoded to DAG-CBOR as empty ones.
type Operation struct {
	// Type is always [OperationType].
	Type string `json:"type"`
	// RotationKeys are did:key strings of the keys that may sign the next
	// operation, in priority order.
	RotationKeys []string `json:"rotationKeys"`
	// VerificationMethods maps key IDs (e.g. "atproto") to did:key strings.
	VerificationMethods map[string]string `json:"verificationMethods"`
	// AlsoKnownAs holds URIs for the subject; the handle is "at://<handle>".
	AlsoKnownAs []string `json:"alsoKnownAs"`
	// Services maps service IDs (e.g. "atproto_pds") to endpoints.
	Services map[string]OpService `json:"services"`
	// Prev is the CID of the previous operation, nil for a genesis operation.
	Prev *string `json:"prev"`
	// Sig is the base64url (unpadded) signature over the unsigned DAG-CBOR
	// encoding of the operation.
	Sig string `json:"sig,omitempty"`
}

// NewGenesis builds a genesis operation and signs it with rotation. Its
// rotation keys are the public key of rotation followed by extraRotation, in
// order; verificationMethods.atproto is signing; alsoKnownAs holds
// at://<normalized handle>; services.atproto_pds points at pdsURL, used
// exactly as given.
func NewGenesis(rotation atcrypto.PrivateKey, extraRotation []atcrypto.PublicKey, signing atcrypto.PublicKey, handle syntax.Handle, pdsURL string) (*Operation, error) {
	if rotation == nil {
		return nil, errors.New("build genesis op: missing rotation key")
	}
	if signing == nil {
		return nil, errors.New("build genesis op: missing signing key")
	}
	if _, err := syntax.ParseHandle(handle.String()); err != nil {
		return nil, fmt.Errorf("build genesis op: %w", err)
	}
	if err := checkServiceURL(pdsURL); err != nil {
		return nil, fmt.Errorf("build genesis op: %w", err)
	}
	rotationPub, err := rotation.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("build genesis op: derive rotation public key: %w", err)
	}
	rotationKeys := make([]string, 0, 1+len(extraRotation))
	rotationKeys = append(rotationKeys, rotationPub.DIDKey())
	for i, k := range extraRotation {
		if k == nil {
			return nil, fmt.Errorf("build genesis op: extra rotation key %d is nil", i)
		}
		rotationKeys = append(rotationKeys, k.DIDKey())
	}
	if err := checkRotationKeys(rotationKeys); err != nil {
		return nil, fmt.Errorf("build genesis op: %w", err)
	}
	op := &Operation{
		Type:                OperationType,
		RotationKeys:        rotationKeys,
		VerificationMethods: map[string]string{KeyIDAtproto: signing.DIDKey()},
		AlsoKnownAs:         []string{handleURI(handle)},
		Services: map[string]OpService{
			ServiceIDPDS: {Type: ServiceTypePDS, Endpoint: pdsURL},
		},
		Prev: nil,
	}
	if err := op.Sign(rotation); err != nil {
		return nil, fmt.Errorf("build genesis op: %w", err)
	}
	return op, nil
}

// Sign sets op.Sig to the signature by priv over the unsigned DAG-CBOR
// encoding of op (any existing Sig is ignored).
func (op *Operation) Sign(priv atcrypto.PrivateKey) error {
	if priv == nil {
		return errors.New("sign plc op: missing key")
	}
	b, err := op.unsignedCBOR()
	if err != nil {
		return fmt.Errorf("sign plc op: %w", err)
	}
	sig, err := priv.HashAndSign(b)
	if err != nil {
		return fmt.Errorf("sign plc op: %w", err)
	}
	op.Sig = base64.RawURLEncoding.EncodeToString(sig)
	return nil
}

// VerifySignature checks op.Sig against pub. The signature must be unpadded,
// canonical base64url and low-S. Failures wrap [atcrypto.ErrInvalidSignature]
// when the signature is well-formed but does not verify.
func (op *Operation) VerifySignature(pub atcrypto.PublicKey) error {
	if pub == nil {
		return errors.New("verify plc op signature: missing key")
	}
	sig, err := base64.RawURLEncoding.Strict().DecodeString(op.Sig)
	if err != nil {
		return fmt.Errorf("decode plc op signature: %w", err)
	}
	b, err := op.unsignedCBOR()
	if err != nil {
		return fmt.Errorf("verify plc op signature: %w", err)
	}
	if err := pub.HashAndVerify(b, sig); err != nil {
		return fmt.Errorf("verify plc op signature: %w", err)
	}
	return nil
}

// DID derives the did:plc identified by op, which must be a signed genesis
// operation: the first 24 characters of the lowercase, unpadded base32
// encoding of the SHA-256 of its signed DAG-CBOR encoding.
func (op *Operation) DID() (syntax.DID, error) {
	if err := op.checkGenesisShape(); err != nil {
		return "", fmt.Errorf("derive did: %w", err)
	}
	b, err := op.signedCBOR()
	if err != nil {
		return "", fmt.Errorf("derive did: %w", err)
	}
	sum := sha256.Sum256(b)
	enc := strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:]))
	did, err := syntax.ParseDID("did:plc:" + enc[:didPLCIdentifierLen])
	if err != nil {
		return "", fmt.Errorf("derive did: %w", err)
	}
	return did, nil
}

// VerifyGenesis checks op the way a PLC directory checks a genesis operation
// and returns the DID it creates: type "plc_operation", prev null, 1 to
// [MaxRotationKeys] distinct, parseable rotation keys, parseable verification
// method keys, and a signature that verifies against one of the rotation keys.
func (op *Operation) VerifyGenesis() (syntax.DID, error) {
	if err := op.checkGenesisShape(); err != nil {
		return "", fmt.Errorf("verify genesis op: %w", err)
	}
	if err := checkRotationKeys(op.RotationKeys); err != nil {
		return "", fmt.Errorf("verify genesis op: %w", err)
	}
	for id, k := range op.VerificationMethods {
		if _, err := atcrypto.ParsePublicDIDKey(k); err != nil {
			return "", fmt.Errorf("verify genesis op: parse verification method %q: %w", id, err)
		}
	}
	var sigErr error
	verified := false
	for _, k := range op.RotationKeys {
		pub, err := atcrypto.ParsePublicDIDKey(k)
		if err != nil {
			return "", fmt.Errorf("verify genesis op: parse rotation key: %w", err)
		}
		if sigErr = op.VerifySignature(pub); sigErr == nil {
			verified = true
			break
		}
	}
	if !verified {
		return "", fmt.Errorf("verify genesis op: no rotation key matches: %w", sigErr)
	}
	did, err := op.DID()
	if err != nil {
		return "", fmt.Errorf("verify genesis op: %w", err)
	}
	return did, nil
}

// checkGenesisShape reports whether op has the fixed fields of a signed
// genesis operation.
func (op *Operation) checkGenesisShape() error {
	if op.Type != OperationType {
		return fmt.Errorf("unsupported operation type %q", op.Type)
	}
	if op.Prev != nil {
		return errors.New("not a genesis operation: prev is set")
	}
	if op.Sig == "" {
		return errors.New("operation is not signed")
	}
	return nil
}

// checkRotationKeys validates a rotation key list: 1 to MaxRotationKeys
// distinct did:key strings that parse as supported public keys.
func checkRotationKeys(keys []string) error {
	if len(keys) == 0 || len(keys) > MaxRotationKeys {
		return fmt.Errorf("need 1 to %d rotation keys, got %d", MaxRotationKeys, len(keys))
	}
	seen := make(map[string]bool, len(keys))
	for _, k := range keys {
		if seen[k] {
			return fmt.Errorf("duplicate rotation key %s", k)
		}
		seen[k] = true
		if _, err := atcrypto.ParsePublicDIDKey(k); err != nil {
			return fmt.Errorf("parse rotation key: %w", err)
		}
	}
	return nil
}

// checkServiceURL checks that u is an absolute http(s) URL with a host.
func checkServiceURL(u string) error {
	parsed, err := url.Parse(u)
	if err != nil {
		return fmt.Errorf("parse pds url: %w", err)
	}
	if (parsed.Scheme != "https" && parsed.Scheme != "http") || parsed.Host == "" {
		return fmt.Errorf("pds url %q is not an absolute http(s) URL", u)
	}
	return nil
}

// unsignedCBOR returns the canonical DAG-CBOR encoding of op without "sig".
func (op *Operation) unsignedCBOR() ([]byte, error) {
	b, err := atdata.MarshalCBOR(op.dataModel(false))
	if err != nil {
		return nil, fmt.Errorf("encode plc op: %w", err)
	}
	return b, nil
}

// signedCBOR returns the canonical DAG-CBOR encoding of op including "sig".
func (op *Operation) signedCBOR() ([]byte, error) {
	b, err := atdata.MarshalCBOR(op.dataModel(true))
	if err != nil {
		return nil, fmt.Errorf("encode plc op: %w", err)
	}
	return b, nil
}

// dataModel returns op as generic atproto data for DAG-CBOR encoding.
func (op *Operation) dataModel(withSig bool) map[string]any {
	rotation := make([]any, len(op.RotationKeys))
	for i, k := range op.RotationKeys {
		rotation[i] = k
	}
	methods := make(map[string]any, len(op.VerificationMethods))
	for id, k := range op.VerificationMethods {
		methods[id] = k
	}
	aka := make([]any, len(op.AlsoKnownAs))
	for i, u := range op.AlsoKnownAs {
		aka[i] = u
	}
	services := make(map[string]any, len(op.Services))
	for id, s := range op.Services {
		services[id] = map[string]any{"type": s.Type, "endpoint": s.Endpoint}
	}
	var prev any
	if op.Prev != nil {
		prev = *op.Prev
	}
	m := map[string]any{
		"type":                op.Type,
		"rotationKeys":        rotation,
		"verificationMethods": methods,
		"alsoKnownAs":         aka,
		"services":            services,
		"prev":                prev,
	}
	if withSig {
		m["sig"] = op.Sig
	}
	return m
}
