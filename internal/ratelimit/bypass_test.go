package ratelimit

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestBypass(t *testing.T) {
	tests := []struct {
		name   string
		key    string
		header []string // values of x-ratelimit-bypass; nil: absent
		want   bool
	}{
		{name: "no key, no header", key: "", want: false},
		{name: "no key, empty header", key: "", header: []string{""}, want: false},
		{name: "no key, any header", key: "", header: []string{"anything"}, want: false},
		{name: "key, no header", key: "s3cret", want: false},
		{name: "key, empty header", key: "s3cret", header: []string{""}, want: false},
		{name: "match", key: "s3cret", header: []string{"s3cret"}, want: true},
		{name: "prefix", key: "s3cret", header: []string{"s3cre"}, want: false},
		{name: "longer", key: "s3cret", header: []string{"s3cret2"}, want: false},
		{name: "case differs", key: "s3cret", header: []string{"S3CRET"}, want: false},
		{name: "trailing space", key: "s3cret", header: []string{"s3cret "}, want: false},
		{name: "first of two headers is used", key: "s3cret", header: []string{"s3cret", "other"}, want: true},
		{name: "second of two headers is not", key: "s3cret", header: []string{"other", "s3cret"}, want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/xrpc/com.atproto.server.createSession", nil)
			for _, v := range tt.header {
				r.Header.Add("x-ratelimit-bypass", v)
			}
			if got := Bypass(r, tt.key); got != tt.want {
				t.Errorf("Bypass = %v, want %v", got, tt.want)
			}
		})
	}

	t.Run("header name in any case", func(t *testing.T) {
		r := httptest.NewRequest(http.MethodPost, "/", nil)
		r.Header.Set("X-RATELIMIT-BYPASS", "s3cret")
		if !Bypass(r, "s3cret") {
			t.Error("upper-case header name did not match")
		}
	})
}
