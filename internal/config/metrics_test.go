package config_test

import (
	"errors"
	"strings"
	"testing"

	"stratus/internal/config"
)

// TestValidateMetricsAddr checks that metrics stay on loopback unless the
// operator explicitly allows otherwise, and never share the public port.
func TestValidateMetricsAddr(t *testing.T) {
	for _, tc := range []struct {
		addr    string
		allow   bool
		bind    string
		port    int
		wantErr string // "" means valid
	}{
		{addr: "", wantErr: ""},
		{addr: "127.0.0.1:9090", wantErr: ""},
		{addr: "[::1]:9090", wantErr: ""},
		{addr: "localhost:9090", wantErr: ""},
		{addr: "127.0.0.1:0", wantErr: ""},
		{addr: "0.0.0.0:9090", wantErr: "not a loopback address"},
		{addr: ":9090", wantErr: "not a loopback address"},
		{addr: "192.0.2.7:9090", wantErr: "metrics-allow-remote"},
		{addr: "metrics.example.com:9090", wantErr: "not a loopback address"},
		{addr: "0.0.0.0:9090", allow: true, wantErr: ""},
		{addr: "127.0.0.1", wantErr: "host:port"},
		{addr: "127.0.0.1:http", wantErr: "invalid port"},
		{addr: "127.0.0.1:70000", wantErr: "invalid port"},
		{addr: "127.0.0.1:2583", bind: "127.0.0.1", port: 2583, wantErr: "public listener"},
		{addr: "0.0.0.0:2583", allow: true, bind: "0.0.0.0", port: 2583, wantErr: "public listener"},
		{addr: "127.0.0.1:9090", bind: "127.0.0.1", port: 2583, wantErr: ""},
	} {
		t.Run(tc.addr, func(t *testing.T) {
			c := validConfig(t)
			c.MetricsAddr, c.MetricsAllowRemote = tc.addr, tc.allow
			if tc.bind != "" {
				c.Bind, c.Port = tc.bind, tc.port
			}
			err := c.Validate()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			var ve *config.ValidationError
			if !errors.As(err, &ve) || !strings.Contains(err.Error(), "metrics-addr") || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Validate = %v, want a metrics-addr problem containing %q", err, tc.wantErr)
			}
		})
	}
}
