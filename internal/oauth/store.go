package oauth

import (
	"context"
	"errors"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"
)

// ErrNotFound is returned by a Store for an unknown request, code, token or
// grant, and by conditional updates whose condition no longer holds.
var ErrNotFound = errors.New("not found")

// Request is a pushed authorization request. It is created by PAR, shown
// on the consent page, and, once approved, carries the authorization code
// until the code is exchanged.
type Request struct {
	ID            string // the part of request_uri after the prefix
	ClientID      string
	RedirectURI   string
	Scope         string
	State         string
	CodeChallenge string
	LoginHint     string
	Prompt        string
	ResponseMode  string
	DPoPJKT       string // thumbprint of the DPoP key used at PAR
	ClientKID     string // key of a confidential client's assertion
	ExpiresAt     time.Time
	CreatedAt     time.Time

	// Set when the user approves.
	CodeHash string
	DID      syntax.DID
}

// Grant is an OAuth session: one client's authorization for one account,
// with its current access and refresh tokens (stored as hashes).
type Grant struct {
	ID            string
	DID           syntax.DID
	ClientID      string
	ClientName    string
	Scope         string
	DPoPJKT       string
	AuthMethod    string // none or private_key_jwt
	ClientKID     string
	CodeHash      string // the code it was issued for, to revoke on code re-use
	CodeChallenge string

	AccessHash       string
	AccessExpiresAt  time.Time
	RefreshHash      string // empty when the client may not refresh
	RefreshExpiresAt time.Time
	// ExpiresAt ends the whole session; zero means no limit.
	ExpiresAt time.Time
	CreatedAt time.Time
	UpdatedAt time.Time
}

// Store persists requests and grants. Implementations must be safe for
// concurrent use.
type Store interface {
	PutRequest(ctx context.Context, r Request) error
	GetRequest(ctx context.Context, id string) (Request, error)
	// ExtendRequest moves the expiry of an unapproved request.
	ExtendRequest(ctx context.Context, id string, exp time.Time) error
	DeleteRequest(ctx context.Context, id string) error
	// ApproveRequest records the code of an unapproved request (ErrNotFound
	// if it is unknown or already approved).
	ApproveRequest(ctx context.Context, id, codeHash string, did syntax.DID, exp time.Time) error
	// ConsumeCode deletes and returns the approved request with the code.
	ConsumeCode(ctx context.Context, codeHash string) (Request, error)
	// ChallengeUsed reports whether a request or a grant created since
	// since used the PKCE challenge.
	ChallengeUsed(ctx context.Context, challenge string, since time.Time) (bool, error)

	CreateGrant(ctx context.Context, g Grant) error
	GrantByAccess(ctx context.Context, hash string) (Grant, error)
	GrantByRefresh(ctx context.Context, hash string) (Grant, error)
	GrantByCode(ctx context.Context, codeHash string) (Grant, error)
	// RetiredRefresh returns the grant whose rotated refresh token had the
	// hash.
	RetiredRefresh(ctx context.Context, hash string) (string, error)
	// RotateGrant replaces the tokens of grant g.ID, only if its refresh
	// token is still oldRefresh, and remembers oldRefresh as retired.
	RotateGrant(ctx context.Context, g Grant, oldRefresh string) error
	DeleteGrant(ctx context.Context, id string) error
	// Grants lists live grants, newest first.
	Grants(ctx context.Context, now time.Time) ([]Grant, error)
	// Prune deletes expired requests and grants.
	Prune(ctx context.Context, now time.Time) error
}
