package oauth

import (
	"context"
	"encoding/json"
	"errors"
	"mime"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"

	"stratus/internal/safehttp"
	"stratus/internal/scope"
)

// Client metadata fetching limits. Metadata is cached briefly so that a
// key removed from a confidential client's metadata stops working soon.
const (
	maxMetadataBytes = 64 << 10
	clientCacheTTL   = 5 * time.Minute
	maxCachedClients = 1000
	assertionMaxAge  = time.Minute
	assertionType    = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
)

// Client is a resolved, validated client.
type Client struct {
	ID              string
	Name            string
	URI             string
	LogoURI         string
	RedirectURIs    []string
	ApplicationType string
	// Loopback marks the http://localhost development client, whose
	// redirect URIs match regardless of port.
	Loopback   bool
	GrantTypes []string
	Scope      *scope.Set
	AuthMethod string
	// Keys are a confidential client's public keys (from jwks or jwks_uri).
	Keys jwk.Set
}

// canRefresh reports whether the client declared the refresh_token grant.
func (c *Client) canRefresh() bool { return contains(c.GrantTypes, "refresh_token") }

func contains(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

type clientEntry struct {
	client *Client
	at     time.Time
}

type clientCache struct {
	mu      sync.Mutex
	entries map[string]clientEntry
}

// clientMetadata is the client metadata document.
type clientMetadata struct {
	ClientID                string          `json:"client_id"`
	ClientName              string          `json:"client_name"`
	ClientURI               string          `json:"client_uri"`
	LogoURI                 string          `json:"logo_uri"`
	ApplicationType         string          `json:"application_type"`
	GrantTypes              []string        `json:"grant_types"`
	ResponseTypes           []string        `json:"response_types"`
	RedirectURIs            []string        `json:"redirect_uris"`
	Scope                   string          `json:"scope"`
	TokenEndpointAuthMethod string          `json:"token_endpoint_auth_method"`
	TokenEndpointAuthAlg    string          `json:"token_endpoint_auth_signing_alg"`
	DPoPBound               *bool           `json:"dpop_bound_access_tokens"`
	JWKS                    json.RawMessage `json:"jwks"`
	JWKSURI                 string          `json:"jwks_uri"`
}

// resolveClient returns the client named by id: the loopback development
// client, or the metadata document fetched from id (cached).
func (p *Provider) resolveClient(ctx context.Context, id string) (*Client, error) {
	if id == "" {
		return nil, errorf("invalid_request", "client_id is required")
	}
	if len(id) > 2048 {
		return nil, errorf("invalid_client", "client_id is too long")
	}
	if strings.HasPrefix(id, "http://localhost") {
		return loopbackClient(id)
	}
	p.clients.mu.Lock()
	e, ok := p.clients.entries[id]
	p.clients.mu.Unlock()
	if ok && p.now().Sub(e.at) < clientCacheTTL {
		return e.client, nil
	}
	c, err := p.fetchClient(ctx, id)
	if err != nil {
		return nil, err
	}
	p.clients.mu.Lock()
	if len(p.clients.entries) >= maxCachedClients {
		p.clients.entries = map[string]clientEntry{}
	}
	p.clients.entries[id] = clientEntry{client: c, at: p.now()}
	p.clients.mu.Unlock()
	return c, nil
}

// checkClientID enforces the form of a discoverable client_id: an https
// URL with a path, no port, credentials, fragment or query, and a host
// name rather than an address. The fetch options relax scheme, port and
// address rules for tests.
func (p *Provider) checkClientID(id string) (*url.URL, error) {
	u, err := url.Parse(id)
	if err != nil || u.Host == "" {
		return nil, errorf("invalid_client", "client_id must be an https URL")
	}
	switch {
	case u.Scheme != "https" && !(u.Scheme == "http" && p.fetchOpts.AllowHTTP):
		return nil, errorf("invalid_client", "client_id must be an https URL")
	case u.User != nil || u.Fragment != "" || u.RawQuery != "" || strings.HasSuffix(id, "#") || strings.HasSuffix(id, "?"):
		return nil, errorf("invalid_client", "client_id must not contain credentials, a query or a fragment")
	case u.Path == "" || u.Path == "/":
		return nil, errorf("invalid_client", "client_id must have a path")
	case u.String() != id:
		return nil, errorf("invalid_client", "client_id must be in canonical form")
	}
	if !p.fetchOpts.AllowPrivate {
		if u.Port() != "" {
			return nil, errorf("invalid_client", "client_id must not have a port")
		}
		if net.ParseIP(u.Hostname()) != nil || !strings.Contains(u.Hostname(), ".") {
			return nil, errorf("invalid_client", "client_id must name a public host")
		}
	}
	return u, nil
}

func (p *Provider) fetchClient(ctx context.Context, id string) (*Client, error) {
	u, err := p.checkClientID(id)
	if err != nil {
		return nil, err
	}
	body, resp, err := safehttp.Get(ctx, p.fetch, id, p.fetchOpts, maxMetadataBytes, map[string][]string{"Accept": {"application/json"}})
	if err != nil {
		p.log.InfoContext(ctx, "client metadata fetch failed", "client_id", id, "err", err)
		return nil, errorf("invalid_client", "client metadata could not be fetched: %s", publicFetchError(err))
	}
	if resp.StatusCode != 200 {
		return nil, errorf("invalid_client", "client metadata must be served with status 200")
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "application/json" {
		return nil, errorf("invalid_client_metadata", "client metadata must be served as application/json")
	}
	var md clientMetadata
	if err := json.Unmarshal(body, &md); err != nil {
		return nil, errorf("invalid_client_metadata", "client metadata is not valid JSON: %v", err)
	}
	if md.ClientID != id {
		return nil, errorf("invalid_client_metadata", "client metadata client_id does not match the URL it was fetched from")
	}
	return p.validateMetadata(ctx, u, &md)
}

// publicFetchError says why a fetch failed without echoing internals.
func publicFetchError(err error) string {
	switch {
	case errors.Is(err, safehttp.ErrForbiddenAddress):
		return "the address is not public"
	case errors.Is(err, safehttp.ErrScheme):
		return "the URL scheme is not allowed"
	case errors.Is(err, safehttp.ErrTooLarge):
		return "the document is too large"
	}
	return "the request failed"
}

func (p *Provider) validateMetadata(ctx context.Context, id *url.URL, md *clientMetadata) (*Client, error) {
	bad := func(format string, args ...any) (*Client, error) {
		return nil, errorf("invalid_client_metadata", format, args...)
	}
	c := &Client{ID: md.ClientID, Name: md.ClientName, ApplicationType: md.ApplicationType, GrantTypes: md.GrantTypes}
	if c.ApplicationType == "" {
		c.ApplicationType = "web"
	}
	if c.ApplicationType != "web" && c.ApplicationType != "native" {
		return bad("application_type must be web or native")
	}
	if md.DPoPBound == nil || !*md.DPoPBound {
		return bad("dpop_bound_access_tokens must be true")
	}
	if !contains(md.GrantTypes, "authorization_code") {
		return bad("grant_types must include authorization_code")
	}
	for _, g := range md.GrantTypes {
		if g != "authorization_code" && g != "refresh_token" {
			return bad("unsupported grant type %q", g)
		}
	}
	if !contains(md.ResponseTypes, "code") {
		return bad("response_types must include code")
	}
	sc, err := scope.Parse(md.Scope)
	if err != nil && !errors.Is(err, scope.ErrInclude) {
		return bad("scope: %v", err)
	}
	if errors.Is(err, scope.ErrInclude) {
		// A client may declare permission sets it would use elsewhere; only
		// the scopes it requests here must be supported.
		sc, err = scope.Parse(withoutIncludes(md.Scope))
		if err != nil {
			return bad("scope: %v", err)
		}
	}
	c.Scope = sc
	if len(md.RedirectURIs) == 0 {
		return bad("redirect_uris must not be empty")
	}
	for _, ru := range md.RedirectURIs {
		if err := p.checkRedirectURI(id, c.ApplicationType, ru); err != nil {
			return bad("redirect_uri %q: %v", ru, err)
		}
	}
	c.RedirectURIs = md.RedirectURIs
	if md.ClientURI != "" {
		cu, err := url.Parse(md.ClientURI)
		if err != nil || cu.Hostname() != id.Hostname() {
			return bad("client_uri must be on the client_id's host")
		}
		c.URI = md.ClientURI
	}
	if lu, err := url.Parse(md.LogoURI); err == nil && lu.Scheme == "https" && lu.Host != "" && lu.User == nil {
		c.LogoURI = md.LogoURI
	}
	switch md.TokenEndpointAuthMethod {
	case "", authMethodNone:
		c.AuthMethod = authMethodNone
		if len(md.JWKS) != 0 || md.JWKSURI != "" {
			return bad("a public client must not publish keys")
		}
	case authMethodPrivateKeyJWT:
		c.AuthMethod = authMethodPrivateKeyJWT
		if md.TokenEndpointAuthAlg != "ES256" {
			return bad("token_endpoint_auth_signing_alg must be ES256")
		}
		keys, err := p.clientKeys(ctx, md)
		if err != nil {
			return nil, err
		}
		c.Keys = keys
	default:
		return bad("token_endpoint_auth_method must be none or private_key_jwt")
	}
	return c, nil
}

func withoutIncludes(s string) string {
	var keep []string
	for _, t := range strings.Fields(s) {
		if !strings.HasPrefix(t, "include:") && !strings.HasPrefix(t, "include?") {
			keep = append(keep, t)
		}
	}
	return strings.Join(keep, " ")
}

// clientKeys loads a confidential client's keys from jwks or jwks_uri
// (exactly one of them). Every key must be public and have a kid.
func (p *Provider) clientKeys(ctx context.Context, md *clientMetadata) (jwk.Set, error) {
	raw := []byte(md.JWKS)
	switch {
	case len(raw) != 0 && md.JWKSURI != "":
		return nil, errorf("invalid_client_metadata", "give jwks or jwks_uri, not both")
	case md.JWKSURI != "":
		ju, err := url.Parse(md.JWKSURI)
		if err != nil || (ju.Scheme != "https" && !p.fetchOpts.AllowHTTP) {
			return nil, errorf("invalid_client_metadata", "jwks_uri must be an https URL")
		}
		body, _, err := safehttp.Get(ctx, p.fetch, md.JWKSURI, p.fetchOpts, maxMetadataBytes, map[string][]string{"Accept": {"application/json"}})
		if err != nil {
			return nil, errorf("invalid_client_metadata", "jwks_uri could not be fetched: %s", publicFetchError(err))
		}
		raw = body
	case len(raw) == 0:
		return nil, errorf("invalid_client_metadata", "private_key_jwt clients must publish jwks or jwks_uri")
	}
	set, err := jwk.Parse(raw)
	if err != nil || set.Len() == 0 {
		return nil, errorf("invalid_client_metadata", "client keys are not a valid, non-empty JWK set")
	}
	for i := range set.Len() {
		k, _ := set.Key(i)
		if private, err := jwk.IsPrivateKey(k); err != nil || private {
			return nil, errorf("invalid_client_metadata", "client keys must be public keys")
		}
		if kid, ok := k.KeyID(); !ok || kid == "" {
			return nil, errorf("invalid_client_metadata", "every client key needs a kid")
		}
	}
	return set, nil
}

// checkRedirectURI applies the spec's rules for redirect URIs: web clients
// use https URLs on the client_id's origin; native clients may also use
// loopback http URLs or a custom scheme that is the client host reversed.
func (p *Provider) checkRedirectURI(id *url.URL, appType, ru string) error {
	u, err := url.Parse(ru)
	if err != nil || u.Scheme == "" {
		return errors.New("not a URL")
	}
	if u.User != nil || u.Fragment != "" {
		return errors.New("must not contain credentials or a fragment")
	}
	switch {
	case u.Scheme == "https" || (u.Scheme == "http" && p.fetchOpts.AllowHTTP && u.Host == id.Host):
		if u.Hostname() == "localhost" {
			return errors.New("localhost is not allowed; use 127.0.0.1 or [::1]")
		}
		if appType == "web" && u.Host != id.Host {
			return errors.New("must be on the client_id's origin")
		}
		return nil
	case u.Scheme == "http":
		if appType != "native" || (u.Hostname() != "127.0.0.1" && u.Hostname() != "::1") {
			return errors.New("http is allowed only for loopback addresses of native clients")
		}
		return nil
	default:
		if appType != "native" {
			return errors.New("custom schemes are allowed only for native clients")
		}
		if !strings.EqualFold(u.Scheme, reverseHost(id.Hostname())) && !strings.HasPrefix(strings.ToLower(u.Scheme), strings.ToLower(reverseHost(id.Hostname()))+".") {
			return errors.New("a custom scheme must be the client_id host in reverse order")
		}
		if !strings.HasPrefix(ru, u.Scheme+":/") || strings.HasPrefix(ru, u.Scheme+"://") {
			return errors.New("a custom scheme URI must look like scheme:/path")
		}
		return nil
	}
}

func reverseHost(h string) string {
	parts := strings.Split(h, ".")
	for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
		parts[i], parts[j] = parts[j], parts[i]
	}
	return strings.Join(parts, ".")
}

// loopbackClient builds the virtual metadata of a development client,
// http://localhost with optional redirect_uri and scope query parameters.
func loopbackClient(id string) (*Client, error) {
	u, err := url.Parse(id)
	if err != nil || u.Scheme != "http" || u.Host != "localhost" || (u.Path != "" && u.Path != "/") || u.User != nil || u.Fragment != "" {
		return nil, errorf("invalid_client", "a development client_id is http://localhost with no port and no path")
	}
	q := u.Query()
	for k := range q {
		if k != "redirect_uri" && k != "scope" {
			return nil, errorf("invalid_client", "a development client_id takes only redirect_uri and scope parameters")
		}
	}
	redirects := q["redirect_uri"]
	if len(redirects) == 0 {
		redirects = []string{"http://127.0.0.1/", "http://[::1]/"}
	}
	for _, r := range redirects {
		ru, err := url.Parse(r)
		if err != nil || ru.Scheme != "http" || (ru.Hostname() != "127.0.0.1" && ru.Hostname() != "::1") || ru.User != nil || ru.Fragment != "" {
			return nil, errorf("invalid_client", "development redirect URIs must be http://127.0.0.1 or http://[::1] URLs")
		}
	}
	if len(q["scope"]) > 1 {
		return nil, errorf("invalid_client", "scope may be given once")
	}
	sc := scope.Atproto
	if q.Has("scope") {
		sc = q.Get("scope")
	}
	set, err := scope.Parse(sc)
	if err != nil {
		return nil, errorf("invalid_client", "scope: %v", err)
	}
	return &Client{
		ID: id, Name: "Development client", RedirectURIs: redirects, ApplicationType: "native", Loopback: true,
		GrantTypes: []string{"authorization_code", "refresh_token"}, Scope: set, AuthMethod: authMethodNone,
	}, nil
}

// redirectAllowed reports whether ru is one of the client's redirect URIs:
// exactly, or for the development client with any port.
func (c *Client) redirectAllowed(ru string) bool {
	if contains(c.RedirectURIs, ru) {
		return true
	}
	if !c.Loopback {
		return false
	}
	u, err := url.Parse(ru)
	if err != nil || u.User != nil || u.Fragment != "" {
		return false
	}
	for _, reg := range c.RedirectURIs {
		r, err := url.Parse(reg)
		if err != nil {
			continue
		}
		if u.Scheme == r.Scheme && u.Hostname() == r.Hostname() && u.Path == r.Path && u.RawQuery == r.RawQuery {
			return true
		}
	}
	return false
}

// authenticateClient checks a request's client authentication against the
// client's declared method and returns the kid of a confidential client's
// key. The assertion key must differ from the DPoP key (dpopJKT).
func (p *Provider) authenticateClient(c *Client, form url.Values, dpopJKT string) (string, error) {
	typ, assertion := form.Get("client_assertion_type"), form.Get("client_assertion")
	if c.AuthMethod == authMethodNone {
		if typ != "" || assertion != "" {
			return "", errorf("invalid_client", "client assertion not expected for a public client")
		}
		return "", nil
	}
	if typ != assertionType || assertion == "" {
		return "", errorf("invalid_client", "this client must authenticate with a private_key_jwt client assertion")
	}
	if len(assertion) > maxProofBytes || strings.Count(assertion, ".") != 2 {
		return "", errorf("invalid_client", "client assertion is not a compact JWT")
	}
	msg, err := jws.ParseString(assertion)
	if err != nil || len(msg.Signatures()) != 1 {
		return "", errorf("invalid_client", "client assertion is not a JWT")
	}
	h := msg.Signatures()[0].ProtectedHeaders()
	kid, _ := h.KeyID()
	if kid == "" {
		return "", errorf("invalid_client", "client assertion needs a kid header")
	}
	if alg, _ := h.Algorithm(); alg != jwa.ES256() {
		return "", errorf("invalid_client", "client assertion alg must be ES256")
	}
	key, ok := c.Keys.LookupKeyID(kid)
	if !ok {
		return "", errorf("invalid_client", "client key %q is not in the client's metadata", kid)
	}
	payload, err := jws.Verify([]byte(assertion), jws.WithKey(jwa.ES256(), key))
	if err != nil {
		return "", errorf("invalid_client", "client assertion signature does not verify")
	}
	var cl struct {
		Iss string `json:"iss"`
		Sub string `json:"sub"`
		Aud any    `json:"aud"`
		JTI string `json:"jti"`
		IAT *int64 `json:"iat"`
		Exp *int64 `json:"exp"`
	}
	if err := json.Unmarshal(payload, &cl); err != nil {
		return "", errorf("invalid_client", "client assertion claims are not valid")
	}
	now := p.now()
	switch {
	case cl.Iss != c.ID || cl.Sub != c.ID:
		return "", errorf("invalid_client", "client assertion iss and sub must be the client_id")
	case !audienceIncludes(cl.Aud, p.issuer):
		return "", errorf("invalid_client", "client assertion aud must be the issuer")
	case cl.JTI == "":
		return "", errorf("invalid_client", "client assertion needs a jti")
	case cl.IAT == nil || time.Unix(*cl.IAT, 0).Before(now.Add(-assertionMaxAge)) || time.Unix(*cl.IAT, 0).After(now.Add(10*time.Second)):
		return "", errorf("invalid_client", "client assertion iat is missing or not recent")
	case cl.Exp != nil && !time.Unix(*cl.Exp, 0).After(now):
		return "", errorf("invalid_client", "client assertion has expired")
	}
	if tp, err := thumbprint(key); err == nil && tp == dpopJKT {
		return "", errorf("invalid_request", "the DPoP key must differ from the client authentication key")
	}
	if !p.replay.add("assertion:"+c.ID+":"+cl.JTI, assertionMaxAge+proofSkew) {
		return "", errorf("invalid_client", "client assertion jti was already used")
	}
	return kid, nil
}

func audienceIncludes(aud any, want string) bool {
	ok := func(s string) bool {
		return s == want || s == want+"/" || s == want+"/oauth/token" || s == want+"/oauth/par"
	}
	switch a := aud.(type) {
	case string:
		return ok(a)
	case []any:
		for _, x := range a {
			if s, _ := x.(string); ok(s) {
				return true
			}
		}
	}
	return false
}

// requireClientAuthMatch checks that a grant's client authenticates as it
// did when the grant was made: same method, same key.
func requireClientAuthMatch(method, kid string, c *Client, gotKID string) error {
	if method != c.AuthMethod || kid != gotKID {
		return errorf("invalid_grant", "client authentication differs from the one the session started with")
	}
	return nil
}
