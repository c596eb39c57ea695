package identity

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/syntax"
)

// JSON-LD contexts and identifiers used in atproto DID documents.
const (
	contextDID       = "https://www.w3.org/ns/did/v1"
	contextMultikey  = "https://w3id.org/security/multikey/v1"
	contextSecp256k1 = "https://w3id.org/security/suites/secp256k1-2019/v1"
	contextP256      = "https://w3id.org/security/suites/ecdsa-2019/v1"

	didKeyPrefix = "did:key:"

	// KeyIDAtproto is the verification method ID (fragment) of the atproto
	// repository signing key.
	KeyIDAtproto = "atproto"
	// ServiceIDPDS is the service ID (fragment) of the account's PDS.
	ServiceIDPDS = "atproto_pds"
	// ServiceTypePDS is the service type of the account's PDS.
	ServiceTypePDS = "AtprotoPersonalDataServer"
	// VerificationMethodMultikey is the verification method type used for
	// every key in a did:plc document.
	VerificationMethodMultikey = "Multikey"
)

// Document is a DID document as served at /.well-known/did.json, by a PLC
// directory, and inside describeRepo/createSession responses. JSON field names
// follow the DID core spec.
type Document struct {
	// Context is the JSON-LD "@context" list.
	Context []string `json:"@context"`
	// ID is the DID the document describes.
	ID syntax.DID `json:"id"`
	// AlsoKnownAs holds URIs for the subject; the handle appears as "at://<handle>".
	AlsoKnownAs []string `json:"alsoKnownAs"`
	// VerificationMethod lists the public keys of the subject.
	VerificationMethod []VerificationMethod `json:"verificationMethod"`
	// Service lists the service endpoints of the subject.
	Service []Service `json:"service"`
}

// VerificationMethod is one public key entry of a [Document].
type VerificationMethod struct {
	// ID is the full key ID, "<did>#<fragment>".
	ID string `json:"id"`
	// Type is the key type, "Multikey" for atproto.
	Type string `json:"type"`
	// Controller is the DID controlling the key.
	Controller string `json:"controller"`
	// PublicKeyMultibase is the multibase key string (a did:key without "did:key:").
	PublicKeyMultibase string `json:"publicKeyMultibase"`
}

// Service is one service endpoint entry of a [Document].
type Service struct {
	// ID is the service ID relative to the document, "#<fragment>".
	ID string `json:"id"`
	// Type is the service type, e.g. "AtprotoPersonalDataServer".
	Type string `json:"type"`
	// ServiceEndpoint is the service URL.
	ServiceEndpoint string `json:"serviceEndpoint"`
}

// NewDocument builds the DID document for an account: alsoKnownAs holds
// at://<normalized handle>, the "#atproto" verification method carries
// signingKey as a Multikey, and the "#atproto_pds" service points at pdsURL,
// used exactly as given.
func NewDocument(did syntax.DID, handle syntax.Handle, signingKey atcrypto.PublicKey, pdsURL string) Document {
	return Document{
		Context:     documentContext(signingKey),
		ID:          did,
		AlsoKnownAs: []string{handleURI(handle)},
		VerificationMethod: []VerificationMethod{{
			ID:                 did.String() + "#" + KeyIDAtproto,
			Type:               VerificationMethodMultikey,
			Controller:         did.String(),
			PublicKeyMultibase: signingKey.Multibase(),
		}},
		Service: []Service{{
			ID:              "#" + ServiceIDPDS,
			Type:            ServiceTypePDS,
			ServiceEndpoint: pdsURL,
		}},
	}
}

// Document builds the DID document a PLC directory serves for did when op is
// its latest operation. Verification methods and services are ordered by ID.
func (op *Operation) Document(did syntax.DID) (Document, error) {
	keys := make([]atcrypto.PublicKey, 0, len(op.VerificationMethods))
	methods := make([]VerificationMethod, 0, len(op.VerificationMethods))
	for _, id := range slices.Sorted(maps.Keys(op.VerificationMethods)) {
		didKey := op.VerificationMethods[id]
		pub, err := atcrypto.ParsePublicDIDKey(didKey)
		if err != nil {
			return Document{}, fmt.Errorf("parse verification method %q: %w", id, err)
		}
		keys = append(keys, pub)
		methods = append(methods, VerificationMethod{
			ID:                 did.String() + "#" + id,
			Type:               VerificationMethodMultikey,
			Controller:         did.String(),
			PublicKeyMultibase: strings.TrimPrefix(didKey, didKeyPrefix),
		})
	}
	services := make([]Service, 0, len(op.Services))
	for _, id := range slices.Sorted(maps.Keys(op.Services)) {
		s := op.Services[id]
		services = append(services, Service{
			ID:              "#" + id,
			Type:            s.Type,
			ServiceEndpoint: s.Endpoint,
		})
	}
	aka := append([]string{}, op.AlsoKnownAs...)
	return Document{
		Context:            documentContext(keys...),
		ID:                 did,
		AlsoKnownAs:        aka,
		VerificationMethod: methods,
		Service:            services,
	}, nil
}

// documentContext returns the JSON-LD contexts for a document holding keys:
// the DID and Multikey contexts, plus one suite context per curve in use, in
// the order a PLC directory emits them.
func documentContext(keys ...atcrypto.PublicKey) []string {
	ctx := []string{contextDID, contextMultikey}
	var k256, p256 bool
	for _, k := range keys {
		switch k.(type) {
		case *atcrypto.PublicKeyK256:
			if !k256 {
				ctx = append(ctx, contextSecp256k1)
			}
			k256 = true
		case *atcrypto.PublicKeyP256:
			if !p256 {
				ctx = append(ctx, contextP256)
			}
			p256 = true
		}
	}
	return ctx
}

// handleURI returns the alsoKnownAs entry for handle.
func handleURI(handle syntax.Handle) string {
	return "at://" + handle.Normalize().String()
}
