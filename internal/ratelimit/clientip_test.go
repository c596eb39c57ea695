package ratelimit

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
)

// proxies is a typical trusted list: a private range, a host, loopback.
var proxies = []string{"10.0.0.0/8", "192.168.1.1", "::1", "fd00::/8"}

func mustPrefixes(t testing.TB, list []string) []netip.Prefix {
	t.Helper()
	p, err := ParsePrefixes(list)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestClientIP(t *testing.T) {
	tests := []struct {
		name    string
		remote  string
		xff     []string // one element per header line; nil: no header
		trusted []string // nil: proxies
		want    string   // "" : the zero Addr
	}{
		{name: "IPv4 peer", remote: "203.0.113.7:5555", want: "203.0.113.7"},
		{name: "IPv6 peer", remote: "[2001:db8::7]:443", want: "2001:db8::7"},
		{name: "IPv6 peer with zone", remote: "[fe80::1%eth0]:443", want: "fe80::1"},
		{name: "IPv4-mapped peer", remote: "[::ffff:203.0.113.7]:1", want: "203.0.113.7"},
		{name: "peer without port", remote: "203.0.113.7", want: "203.0.113.7"},
		{name: "unix socket peer", remote: "@", xff: []string{"198.51.100.1"}, want: ""},
		{name: "empty peer", remote: "", want: ""},

		{name: "untrusted peer, spoofed XFF ignored", remote: "203.0.113.7:1", xff: []string{"198.51.100.1"}, want: "203.0.113.7"},
		{name: "untrusted peer, spoofed trusted XFF ignored", remote: "203.0.113.7:1", xff: []string{"10.0.0.9"}, want: "203.0.113.7"},
		{name: "untrusted IPv6 peer ignored", remote: "[2001:db8::7]:1", xff: []string{"198.51.100.1"}, want: "2001:db8::7"},
		{name: "no trusted proxies", remote: "10.0.0.1:1", xff: []string{"198.51.100.1"}, trusted: []string{}, want: "10.0.0.1"},

		{name: "trusted peer, one hop", remote: "10.0.0.1:1", xff: []string{"198.51.100.1"}, want: "198.51.100.1"},
		{name: "trusted peer, no header", remote: "10.0.0.1:1", want: "10.0.0.1"},
		{name: "trusted peer, empty header", remote: "10.0.0.1:1", xff: []string{""}, want: "10.0.0.1"},
		{name: "trusted peer, only commas", remote: "10.0.0.1:1", xff: []string{" , ,,"}, want: "10.0.0.1"},
		{name: "trusted chain", remote: "10.0.0.1:1", xff: []string{"198.51.100.1, 192.168.1.1"}, want: "198.51.100.1"},
		{name: "client-written entries skipped", remote: "10.0.0.1:1", xff: []string{"1.1.1.1, 198.51.100.1, 192.168.1.1"}, want: "198.51.100.1"},
		{name: "client-written trusted entry skipped", remote: "10.0.0.1:1", xff: []string{"10.9.9.9, 198.51.100.1"}, want: "198.51.100.1"},
		{name: "all trusted: left-most", remote: "10.0.0.1:1", xff: []string{"10.0.0.5, 192.168.1.1"}, want: "10.0.0.5"},
		{name: "IPv6 proxy and client", remote: "[::1]:8080", xff: []string{"2001:db8::5"}, want: "2001:db8::5"},
		{name: "IPv6 chain", remote: "[fd00::2]:1", xff: []string{"2001:db8::5, fd00::1"}, want: "2001:db8::5"},
		{name: "IPv4-mapped trusted peer", remote: "[::ffff:10.0.0.1]:1", xff: []string{"198.51.100.1"}, want: "198.51.100.1"},
		{name: "IPv4-mapped entry", remote: "10.0.0.1:1", xff: []string{"::ffff:198.51.100.1"}, want: "198.51.100.1"},
		{name: "entry with port", remote: "10.0.0.1:1", xff: []string{"198.51.100.1:4711"}, want: "198.51.100.1"},
		{name: "IPv6 entry with port", remote: "10.0.0.1:1", xff: []string{"[2001:db8::5]:80"}, want: "2001:db8::5"},
		{name: "entry with zone", remote: "10.0.0.1:1", xff: []string{"fe80::9%eth0"}, want: "fe80::9"},
		{name: "spaces and tabs", remote: "10.0.0.1:1", xff: []string{" \t198.51.100.1 \t,\t192.168.1.1 "}, want: "198.51.100.1"},

		{name: "garbage", remote: "10.0.0.1:1", xff: []string{"not-an-ip"}, want: "10.0.0.1"},
		{name: "hostname", remote: "10.0.0.1:1", xff: []string{"client.example.com"}, want: "10.0.0.1"},
		{name: "unknown", remote: "10.0.0.1:1", xff: []string{"unknown"}, want: "10.0.0.1"},
		{name: "CIDR entry", remote: "10.0.0.1:1", xff: []string{"198.51.100.0/24"}, want: "10.0.0.1"},
		{name: "garbage behind the answer ignored", remote: "10.0.0.1:1", xff: []string{"garbage, 198.51.100.1"}, want: "198.51.100.1"},
		{name: "garbage among proxies", remote: "10.0.0.1:1", xff: []string{"198.51.100.1, garbage, 192.168.1.1"}, want: "10.0.0.1"},
		{name: "bracketed IPv4", remote: "10.0.0.1:1", xff: []string{"[198.51.100.1]"}, want: "10.0.0.1"},
		{name: "semicolons", remote: "10.0.0.1:1", xff: []string{"198.51.100.1;198.51.100.2"}, want: "10.0.0.1"},

		{name: "multiple headers: last is right-most", remote: "10.0.0.1:1", xff: []string{"198.51.100.1", "203.0.113.9"}, want: "203.0.113.9"},
		{name: "multiple headers: chain spans lines", remote: "10.0.0.1:1", xff: []string{"1.1.1.1, 198.51.100.1", "192.168.1.1"}, want: "198.51.100.1"},
		{name: "multiple headers: empty last line", remote: "10.0.0.1:1", xff: []string{"198.51.100.1", ""}, want: "198.51.100.1"},
		{name: "multiple headers: garbage line", remote: "10.0.0.1:1", xff: []string{"198.51.100.1", "garbage"}, want: "10.0.0.1"},
		{name: "multiple headers: all trusted", remote: "10.0.0.1:1", xff: []string{"10.0.0.7", "10.0.0.8"}, want: "10.0.0.7"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/xrpc/com.atproto.server.createSession", nil)
			r.RemoteAddr = tt.remote
			for _, v := range tt.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			trusted := proxies
			if tt.trusted != nil {
				trusted = tt.trusted
			}
			got := ClientIP(r, mustPrefixes(t, trusted))
			var want netip.Addr
			if tt.want != "" {
				want = netip.MustParseAddr(tt.want)
			}
			if got != want {
				t.Errorf("ClientIP = %v, want %v", got, want)
			}
		})
	}
}

func TestParsePrefixes(t *testing.T) {
	tests := []struct {
		name    string
		in      []string
		want    []string
		wantErr string // substring of the error; "" for success
	}{
		{name: "nil", in: nil, want: []string{}},
		{name: "bare IPv4", in: []string{"10.0.0.1"}, want: []string{"10.0.0.1/32"}},
		{name: "bare IPv6", in: []string{"::1"}, want: []string{"::1/128"}},
		{name: "CIDRs", in: []string{"10.0.0.0/8", "2001:db8::/32"}, want: []string{"10.0.0.0/8", "2001:db8::/32"}},
		{name: "host bits masked", in: []string{"10.1.2.3/8"}, want: []string{"10.0.0.0/8"}},
		{name: "IPv4-mapped CIDR", in: []string{"::ffff:10.0.0.0/104"}, want: []string{"10.0.0.0/8"}},
		{name: "IPv4-mapped address", in: []string{"::ffff:10.0.0.1"}, want: []string{"10.0.0.1/32"}},
		{name: "spaces and blanks", in: []string{" 192.168.0.0/16 ", "", "  "}, want: []string{"192.168.0.0/16"}},
		{name: "garbage", in: []string{"10.0.0.0/8", "proxy.example.com"}, wantErr: `"proxy.example.com"`},
		{name: "prefix too long", in: []string{"10.0.0.0/33"}, wantErr: `"10.0.0.0/33"`},
		{name: "zone", in: []string{"fe80::1%eth0"}, wantErr: "zone"},
		{name: "port", in: []string{"10.0.0.1:80"}, wantErr: `"10.0.0.1:80"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParsePrefixes(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one mentioning %s", err, tt.wantErr)
				}
				if errors.Unwrap(err) == nil {
					t.Errorf("err %v wraps no cause", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i].String() != tt.want[i] {
					t.Errorf("[%d] = %v, want %v", i, got[i], tt.want[i])
				}
			}
		})
	}
}

// FuzzClientIP feeds arbitrary X-Forwarded-For values through ClientIP. It
// must not panic; from an untrusted peer it must return the peer; from a
// trusted one, the peer or the normalised form of one of the header's
// entries.
func FuzzClientIP(f *testing.F) {
	for _, s := range []string{
		"", "198.51.100.1", "198.51.100.1, 10.0.0.2", "garbage", ",,,", " , ",
		"1.1.1.1, 198.51.100.1, 192.168.1.1", "[2001:db8::5]:80", "::ffff:1.2.3.4",
		"fe80::1%eth0", "10.0.0.5, 10.0.0.6", "198.51.100.1:4711", "[::1]", "\x00,\xff",
	} {
		f.Add(s)
	}
	trusted := mustPrefixes(f, proxies)
	trustedPeer := netip.MustParseAddr("10.0.0.1")
	untrustedPeer := netip.MustParseAddr("203.0.113.7")
	f.Fuzz(func(t *testing.T, xff string) {
		r := &http.Request{Header: http.Header{"X-Forwarded-For": {xff}}}

		r.RemoteAddr = "203.0.113.7:1"
		if got := ClientIP(r, trusted); got != untrustedPeer {
			t.Fatalf("untrusted peer, XFF %q: got %v", xff, got)
		}

		r.RemoteAddr = "10.0.0.1:1"
		got := ClientIP(r, trusted)
		if got == trustedPeer {
			return
		}
		if !got.IsValid() || got.Zone() != "" || got.Is4In6() {
			t.Fatalf("XFF %q: got non-normalised %v", xff, got)
		}
		for _, item := range strings.Split(xff, ",") {
			if a, ok := parseHost(strings.Trim(item, " \t")); ok && a == got {
				return
			}
		}
		t.Fatalf("XFF %q: got %v, neither the peer nor an entry", xff, got)
	})
}

func BenchmarkClientIP(b *testing.B) {
	trusted := mustPrefixes(b, proxies)
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.RemoteAddr = "10.0.0.1:1234"
	r.Header.Set("X-Forwarded-For", strings.Repeat("1.1.1.1, ", 1000)+"198.51.100.1, 192.168.1.1")
	for b.Loop() {
		ClientIP(r, trusted)
	}
}
