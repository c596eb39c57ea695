package metrics_test

import (
	"net/http/httptest"
	"testing"

	"stratus/internal/metrics"
)

// TestLabel checks that the method label stays within a bounded set:
// served NSIDs by name, everything else grouped.
func TestLabel(t *testing.T) {
	m := metrics.New(metrics.Config{Served: func(nsid string) bool { return nsid == "com.atproto.repo.createRecord" }})
	for _, tc := range []struct{ path, want string }{
		{"/xrpc/com.atproto.repo.createRecord", "com.atproto.repo.createRecord"},
		{"/xrpc/_health", "_health"},
		{"/xrpc/app.bsky.feed.getFeed", metrics.LabelProxied},
		{"/xrpc/com.example.anything.at.all", metrics.LabelProxied},
		{"/xrpc/COM.ATPROTO.REPO.CREATERECORD", metrics.LabelProxied},
		{"/xrpc/not-an-nsid", metrics.LabelInvalid},
		{"/xrpc/a.b.c%20d", metrics.LabelInvalid},
		{"/xrpc/", metrics.LabelInvalid},
		{"/.well-known/did.json", "/.well-known/did.json"},
		{"/oauth/authorize", "/oauth/authorize"},
		{"/", "/"},
		{"/oauth/elsewhere", metrics.LabelOther},
		{"/wp-login.php", metrics.LabelOther},
	} {
		r := httptest.NewRequest("GET", tc.path, nil)
		if got := m.Label(r); got != tc.want {
			t.Errorf("Label(%s) = %q, want %q", tc.path, got, tc.want)
		}
	}
}
