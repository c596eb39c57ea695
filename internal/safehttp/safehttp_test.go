package safehttp

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"
)

func TestIsPublic(t *testing.T) {
	cases := []struct {
		addr   string
		public bool
	}{
		{"8.8.8.8", true},
		{"1.1.1.1", true},
		{"2606:4700:4700::1111", true},
		{"127.0.0.1", false},
		{"127.8.9.10", false},
		{"10.1.2.3", false},
		{"172.16.0.1", false},
		{"172.31.255.255", false},
		{"192.168.1.1", false},
		{"169.254.169.254", false}, // cloud metadata
		{"100.64.0.1", false},
		{"0.0.0.0", false},
		{"255.255.255.255", false},
		{"224.0.0.1", false},
		{"192.0.2.1", false},
		{"::1", false},
		{"::", false},
		{"fe80::1", false},
		{"fd00::1", false},
		{"::ffff:127.0.0.1", false}, // IPv4-mapped loopback
		{"::ffff:10.0.0.1", false},
		{"::ffff:8.8.8.8", true},
		{"64:ff9b::a00:1", false}, // NAT64 of 10.0.0.1
		{"2002:a00:1::", false},   // 6to4 of 10.0.0.1
		{"2001:db8::1", false},
		{"ff02::1", false},
	}
	for _, c := range cases {
		if got := IsPublic(netip.MustParseAddr(c.addr)); got != c.public {
			t.Errorf("IsPublic(%s) = %v, want %v", c.addr, got, c.public)
		}
	}
}

func TestCheckURL(t *testing.T) {
	cases := []struct {
		url  string
		opts Options
		ok   bool
	}{
		{"https://example.com/x", Options{}, true},
		{"http://example.com/x", Options{}, false},
		{"http://example.com/x", Options{AllowHTTP: true}, true},
		{"ftp://example.com/x", Options{AllowHTTP: true}, false},
		{"file:///etc/passwd", Options{}, false},
		{"https://127.0.0.1/", Options{}, false},
		{"https://[::1]/", Options{}, false},
		{"https://169.254.169.254/latest/meta-data", Options{}, false},
		{"https://localhost/", Options{}, false},
		{"https://api.LOCALHOST/", Options{}, false},
		{"https://127.0.0.1/", Options{AllowPrivate: true}, true},
		{"https:///nohost", Options{}, false},
	}
	for _, c := range cases {
		u, err := url.Parse(c.url)
		if err != nil {
			t.Fatalf("parse %s: %v", c.url, err)
		}
		if err := CheckURL(u, c.opts); (err == nil) != c.ok {
			t.Errorf("CheckURL(%s, %+v) = %v, want ok=%v", c.url, c.opts, err, c.ok)
		}
	}
}

// A name can resolve to loopback: the dial-time check refuses it even
// though the URL check cannot see the address.
func TestClientRefusesLoopbackAtConnect(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Error("request reached the loopback server")
	}))
	defer srv.Close()

	c := NewClient(Options{AllowHTTP: true})
	resp, err := c.Get(srv.URL)
	if err == nil {
		resp.Body.Close()
		t.Fatal("request to a loopback address succeeded")
	}
	if !errors.Is(err, ErrForbiddenAddress) {
		t.Fatalf("error = %v, want ErrForbiddenAddress", err)
	}
}

func TestClientAllowPrivateAndLimits(t *testing.T) {
	hops := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/big":
			w.Write([]byte(strings.Repeat("x", 2048)))
		case "/loop":
			hops++
			http.Redirect(w, r, "/loop", http.StatusFound)
		default:
			w.Write([]byte("ok"))
		}
	}))
	defer srv.Close()
	opts := Options{AllowHTTP: true, AllowPrivate: true}
	c := NewClient(opts)
	ctx := context.Background()

	body, _, err := Get(ctx, c, srv.URL+"/small", opts, 1024, nil)
	if err != nil || string(body) != "ok" {
		t.Fatalf("Get = %q, %v", body, err)
	}
	if _, _, err := Get(ctx, c, srv.URL+"/big", opts, 1024, nil); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized body: err = %v, want ErrTooLarge", err)
	}
	if _, _, err := Get(ctx, c, srv.URL+"/loop", opts, 1024, nil); err == nil {
		t.Fatal("endless redirects were followed")
	}
	if hops != 4 {
		t.Fatalf("redirect hops = %d, want 4 (first request + 3 redirects)", hops)
	}
	strict := Options{AllowHTTP: true}
	if _, _, err := Get(ctx, NewClient(strict), srv.URL+"/small", strict, 1024, nil); !errors.Is(err, ErrForbiddenAddress) {
		t.Fatalf("strict client: err = %v, want ErrForbiddenAddress", err)
	}
}

func TestNoRedirects(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/" {
			http.Redirect(w, r, "/next", http.StatusFound)
			return
		}
		w.Write([]byte("followed"))
	}))
	defer srv.Close()
	opts := Options{AllowHTTP: true, AllowPrivate: true, MaxRedirects: -1}
	if _, _, err := Get(context.Background(), NewClient(opts), srv.URL, opts, 1024, nil); err == nil {
		t.Fatal("redirect followed with MaxRedirects -1")
	}
}
