package ratelimit

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
)

// ClientIP returns the client address of r: the TCP peer (r.RemoteAddr),
// unless the peer is one of trusted, in which case the right-most
// X-Forwarded-For entry that is not itself trusted (walking from the right)
// is used.
//
// Walking from the right matters: every proxy appends the address it saw,
// so the entries left of the last untrusted one were written by the client
// and may be anything. If every entry is trusted, the left-most one is the
// client (a host inside the trusted network). A malformed entry reached
// before an untrusted one makes the whole header unreliable, so the peer is
// returned; so it is when the header is absent or empty. X-Forwarded-For
// from an untrusted peer is never read. Several X-Forwarded-For header lines
// are one list, in order, as HTTP defines.
//
// Addresses are normalised so that one client always yields one key:
// IPv4-mapped IPv6 addresses become IPv4 and IPv6 zones are dropped. Entries
// with a port ("192.0.2.1:80", "[2001:db8::1]:80") are accepted, as some
// proxies write them. The result is the zero Addr only if r.RemoteAddr is
// not an IP address (a Unix socket, for one); callers should then treat
// every such request as one client.
func ClientIP(r *http.Request, trusted []netip.Prefix) netip.Addr {
	peer, ok := parseHost(r.RemoteAddr)
	if !ok || !isTrusted(peer, trusted) {
		return peer
	}
	values := r.Header.Values("X-Forwarded-For")
	var leftmost netip.Addr
	for i := len(values) - 1; i >= 0; i-- {
		// Walk the list from the right without splitting it, so a long
		// header costs no allocation and only the entries actually needed
		// are parsed.
		rest := values[i]
		for rest != "" {
			var item string
			if j := strings.LastIndexByte(rest, ','); j >= 0 {
				rest, item = rest[:j], rest[j+1:]
			} else {
				rest, item = "", rest
			}
			item = strings.Trim(item, " \t")
			if item == "" {
				continue // empty list elements are allowed and ignored (RFC 9110 §5.6.1)
			}
			a, ok := parseHost(item)
			if !ok {
				return peer
			}
			if !isTrusted(a, trusted) {
				return a
			}
			leftmost = a
		}
	}
	if leftmost.IsValid() {
		return leftmost
	}
	return peer
}

// parseHost parses an address with or without a port and normalises it.
func parseHost(s string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		ap, perr := netip.ParseAddrPort(s)
		if perr != nil {
			return netip.Addr{}, false
		}
		a = ap.Addr()
	}
	return a.WithZone("").Unmap(), true
}

// isTrusted reports whether a lies in one of trusted. Lists are a handful of
// prefixes, so a linear scan is the fastest structure.
func isTrusted(a netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// ParsePrefixes parses a trusted-proxy list for [ClientIP]. Entries are
// CIDRs ("10.0.0.0/8") or bare addresses ("10.0.0.1" is 10.0.0.1/32, "::1"
// is ::1/128); blank entries are skipped so that an empty setting split on
// commas means "none". Host bits are masked off, and IPv4-mapped IPv6
// prefixes become IPv4 ones, matching how ClientIP normalises addresses.
func ParsePrefixes(list []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(list))
	for _, s := range list {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		p, err := parsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("ratelimit: trusted proxy %q: %w", s, err)
		}
		out = append(out, p)
	}
	return out, nil
}

func parsePrefix(s string) (netip.Prefix, error) {
	var p netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		if p, err = netip.ParsePrefix(s); err != nil {
			return netip.Prefix{}, err
		}
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		if a.Zone() != "" {
			// A zone names a link on this host; it cannot be matched
			// against peer addresses, which ClientIP strips of zones.
			return netip.Prefix{}, errors.New("address has a zone")
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}
