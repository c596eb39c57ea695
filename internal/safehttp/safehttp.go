// Package safehttp builds HTTP clients for fetching URLs that callers, not
// the operator, chose: OAuth client metadata, handle verification, proxied
// service endpoints. Such a URL could otherwise point the server at its own
// loopback interface, the private network it runs in, or a cloud metadata
// endpoint (server-side request forgery).
//
// The guard sits in the dialer, so it checks the address actually connected
// to, after DNS resolution and on every redirect hop. A host name that
// resolves to a public address at check time and a private one at connect
// time (DNS rebinding) is therefore refused too.
package safehttp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"syscall"
	"time"
)

// ErrForbiddenAddress is returned (wrapped) when a request would connect to
// an address that is not on the public internet.
var ErrForbiddenAddress = errors.New("address is not publicly routable")

// ErrTooLarge is returned by ReadAll when a body exceeds its limit.
var ErrTooLarge = errors.New("response body too large")

// ErrScheme is returned when a URL's scheme is not allowed.
var ErrScheme = errors.New("URL scheme not allowed")

// Options configure a client. The zero value is the strict default: https
// only, public addresses only, 10 s timeout, up to 3 redirects.
type Options struct {
	// Timeout bounds a whole request, body included. Zero means 10 s.
	Timeout time.Duration
	// MaxRedirects is how many redirects are followed. Negative means none.
	// Zero means 3.
	MaxRedirects int
	// AllowHTTP permits plain http URLs (development, tests).
	AllowHTTP bool
	// AllowPrivate permits loopback and private addresses. Only tests and
	// explicitly configured development setups set it.
	AllowPrivate bool
}

// NewClient returns a client that refuses non-public addresses unless
// opts.AllowPrivate is set. It ignores proxy environment variables, since
// a proxy would connect on the client's behalf and bypass the guard.
func NewClient(opts Options) *http.Client {
	timeout := opts.Timeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	maxRedirects := opts.MaxRedirects
	if maxRedirects == 0 {
		maxRedirects = 3
	}
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	if !opts.AllowPrivate {
		dialer.Control = control
	}
	transport := &http.Transport{
		Proxy:                 nil,
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   10,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   5 * time.Second,
		ResponseHeaderTimeout: timeout,
		ExpectContinueTimeout: time.Second,
	}
	return &http.Client{
		Transport: transport,
		Timeout:   timeout,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if maxRedirects < 0 || len(via) > maxRedirects {
				return fmt.Errorf("stopped after %d redirects", len(via))
			}
			return CheckURL(req.URL, opts)
		},
	}
}

// CheckURL refuses URLs whose scheme is not allowed, and host names that
// are literal non-public addresses. Names are checked again at connect time.
func CheckURL(u *url.URL, opts Options) error {
	switch u.Scheme {
	case "https":
	case "http":
		if !opts.AllowHTTP {
			return fmt.Errorf("%w: %q", ErrScheme, u.Scheme)
		}
	default:
		return fmt.Errorf("%w: %q", ErrScheme, u.Scheme)
	}
	if u.Hostname() == "" {
		return fmt.Errorf("URL has no host")
	}
	if opts.AllowPrivate {
		return nil
	}
	if addr, err := netip.ParseAddr(u.Hostname()); err == nil && !IsPublic(addr) {
		return fmt.Errorf("%w: %s", ErrForbiddenAddress, addr)
	}
	if u.Hostname() == "localhost" || hasSuffixFold(u.Hostname(), ".localhost") {
		return fmt.Errorf("%w: %s", ErrForbiddenAddress, u.Hostname())
	}
	return nil
}

func hasSuffixFold(s, suffix string) bool {
	if len(s) < len(suffix) {
		return false
	}
	tail := s[len(s)-len(suffix):]
	for i := range len(tail) {
		a, b := tail[i], suffix[i]
		if 'A' <= a && a <= 'Z' {
			a += 'a' - 'A'
		}
		if a != b {
			return false
		}
	}
	return true
}

// control runs after resolution, just before connect, with the literal
// address being dialled.
func control(network, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return fmt.Errorf("%w: %s", ErrForbiddenAddress, address)
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return fmt.Errorf("%w: %s", ErrForbiddenAddress, address)
	}
	if !IsPublic(addr) {
		return fmt.Errorf("%w: %s", ErrForbiddenAddress, addr)
	}
	return nil
}

// nonPublic lists special-purpose ranges (RFC 6890 and successors) that
// are not reachable on the public internet or reach this host's own
// network: a fetch to them is refused.
var nonPublic = func() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range []string{
		"0.0.0.0/8",          // this network
		"10.0.0.0/8",         // private
		"100.64.0.0/10",      // carrier-grade NAT
		"127.0.0.0/8",        // loopback
		"169.254.0.0/16",     // link-local, cloud metadata
		"172.16.0.0/12",      // private
		"192.0.0.0/24",       // IETF protocol assignments
		"192.0.2.0/24",       // documentation
		"192.88.99.0/24",     // 6to4 relay anycast
		"192.168.0.0/16",     // private
		"198.18.0.0/15",      // benchmarking
		"198.51.100.0/24",    // documentation
		"203.0.113.0/24",     // documentation
		"224.0.0.0/4",        // multicast
		"240.0.0.0/4",        // reserved, broadcast
		"::/128",             // unspecified
		"::1/128",            // loopback
		"64:ff9b:1::/48",     // local-use NAT64
		"100::/64",           // discard
		"2001::/23",          // IETF protocol assignments
		"2001:db8::/32",      // documentation
		"2002::/16",          // 6to4, embeds IPv4
		"fc00::/7",           // unique local
		"fe80::/10",          // link-local
		"fec0::/10",          // site-local (deprecated)
		"ff00::/8",           // multicast
		"::ffff:0:0/96",      // IPv4-mapped, checked as IPv4 below
		"64:ff9b::/96",       // NAT64, embeds IPv4
		"2001:20::/28",       // ORCHIDv2
		"5f00::/16",          // SRv6 SIDs
		"3fff::/20",          // documentation
		"::ffff:0:0:0/96",    // IPv4-translated
		"2620:4f:8000::/48",  // AS112-v6
		"2001:10::/28",       // ORCHID (deprecated)
		"2001:2::/48",        // benchmarking
		"192.31.196.0/24",    // AS112-v4
		"192.52.193.0/24",    // AMT
		"192.175.48.0/24",    // direct delegation AS112
		"255.255.255.255/32", // limited broadcast
	} {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}()

// IsPublic reports whether addr is a globally routable unicast address.
func IsPublic(addr netip.Addr) bool {
	addr = addr.WithZone("")
	if addr.Is4In6() {
		addr = addr.Unmap()
	}
	if !addr.IsValid() || !addr.IsGlobalUnicast() || addr.IsPrivate() {
		return false
	}
	for _, p := range nonPublic {
		if p.Contains(addr) {
			return false
		}
	}
	return true
}

// Get fetches u with the client and returns its body, refusing bodies over
// limit bytes. A non-2xx status is an error naming it.
func Get(ctx context.Context, c *http.Client, u string, opts Options, limit int64, header http.Header) ([]byte, *http.Response, error) {
	parsed, err := url.Parse(u)
	if err != nil {
		return nil, nil, fmt.Errorf("parse URL: %w", err)
	}
	if err := CheckURL(parsed, opts); err != nil {
		return nil, nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, parsed.String(), nil)
	if err != nil {
		return nil, nil, fmt.Errorf("build request: %w", err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("fetch %s: %w", parsed.Redacted(), err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, resp, fmt.Errorf("fetch %s: status %d", parsed.Redacted(), resp.StatusCode)
	}
	body, err := ReadAll(resp.Body, limit)
	if err != nil {
		return nil, resp, fmt.Errorf("fetch %s: %w", parsed.Redacted(), err)
	}
	return body, resp, nil
}

// ReadAll reads r to the end, failing with ErrTooLarge past limit bytes
// without reading further.
func ReadAll(r io.Reader, limit int64) ([]byte, error) {
	body, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(body)) > limit {
		return nil, fmt.Errorf("%w: over %d bytes", ErrTooLarge, limit)
	}
	return body, nil
}
