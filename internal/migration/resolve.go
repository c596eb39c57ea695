package migration

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	indigoid "github.com/bluesky-social/indigo/atproto/identity"
	"github.com/bluesky-social/indigo/atproto/syntax"

	"stratus/internal/identity"
)

// Resolver finds the atproto signing key a DID document names now,
// uncached: a migration must see the document as it is at this moment.
type Resolver struct {
	// PLC is the configured PLC directory (did:plc).
	PLC *identity.PLCClient
	// Web fetches did:web documents; it should be SSRF-guarded, since the
	// host comes from the DID.
	Web *http.Client
}

// SigningKey returns the key of the document's #atproto verification
// method.
func (r *Resolver) SigningKey(ctx context.Context, did syntax.DID) (atcrypto.PublicKey, error) {
	key, _, err := r.PDS(ctx, did)
	return key, err
}

// PDS returns the signing key and the PDS endpoint (#atproto_pds) the
// DID document names now; the endpoint is empty when it names none.
func (r *Resolver) PDS(ctx context.Context, did syntax.DID) (atcrypto.PublicKey, string, error) {
	switch did.Method() {
	case "plc":
		if r.PLC == nil {
			return nil, "", fmt.Errorf("no PLC directory configured")
		}
		doc, err := r.PLC.Document(ctx, did)
		if err != nil {
			return nil, "", err
		}
		endpoint := ""
		for _, svc := range doc.Service {
			if svc.ID == "#atproto_pds" || strings.HasSuffix(svc.ID, "#atproto_pds") {
				endpoint = svc.ServiceEndpoint
			}
		}
		for _, vm := range doc.VerificationMethod {
			if vm.ID == "#atproto" || strings.HasSuffix(vm.ID, "#atproto") {
				key, err := atcrypto.ParsePublicMultibase(vm.PublicKeyMultibase)
				return key, endpoint, err
			}
		}
		return nil, "", fmt.Errorf("the DID document of %s has no atproto signing key", did)
	case "web":
		dir := &indigoid.BaseDirectory{SkipHandleVerification: true}
		if r.Web != nil {
			dir.HTTPClient = *r.Web
		}
		doc, err := dir.ResolveDID(ctx, did)
		if err != nil {
			return nil, "", err
		}
		id := indigoid.ParseIdentity(doc)
		key, err := id.PublicKey()
		return key, id.PDSEndpoint(), err
	default:
		return nil, "", fmt.Errorf("unsupported DID method %q", did.Method())
	}
}
