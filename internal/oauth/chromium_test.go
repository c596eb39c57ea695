package oauth_test

import (
	"context"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"stratus/internal/pdstest"
)

const chromiumPath = "/usr/bin/chromium"

// TestConsentPageInChromium renders the consent page in headless Chromium
// (no JavaScript is needed, and the page's Content-Security-Policy is in
// force) and checks the DOM it built: the client, the permissions and a
// complete sign-in form. The form is then submitted from Go, as a browser
// would post it, and the flow completes.
func TestConsentPageInChromium(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Skipf("headless browser test skipped: %s not found (install Debian's chromium package; .ci/run does when it runs as root)", chromiumPath)
	}
	srv := pdstest.NewServer(t, relaxed())
	clientID, redirect := metadataServer(t, nil)
	c := newClient(t, srv, clientID)
	p := c.par(redirect, "atproto transition:generic", nil)
	if p.status != http.StatusCreated {
		t.Fatalf("PAR: %d %s", p.status, p.raw)
	}
	pageURL := srv.URL() + "/oauth/authorize?" + url.Values{"request_uri": {p.str("request_uri")}, "client_id": {clientID}}.Encode()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, chromiumPath, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
		"--no-first-run", "--user-data-dir="+t.TempDir(), "--dump-dom", pageURL)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium: %v\n%s", err, out)
	}
	dom := string(out)
	for _, want := range []string{
		"Authorize Test App", clientID, `<form method="post" action="/oauth/authorize">`, `name="csrf"`,
		`name="password"`, `name="identifier"`, `value="approve"`, `value="deny"`, "Create, change and delete any record",
	} {
		if !strings.Contains(dom, want) {
			t.Errorf("rendered DOM lacks %q:\n%s", want, dom)
		}
	}
	// Rendering did not use the request up; Go completes the form.
	code, verifier := "", ""
	page, csrf, cookie := c.consentPage(p.str("request_uri"))
	if page.status != 200 {
		t.Fatalf("page after browser view: %d", page.status)
	}
	a := c.submit(p.str("request_uri"), csrf, cookie, "approve", srv.Handle(), pdstest.Password)
	loc, _ := url.Parse(a.header.Get("Location"))
	code, verifier = loc.Query().Get("code"), p.str("verifier")
	if tok := c.exchange(code, redirect, verifier); tok.status != 200 {
		t.Fatalf("token: %d %s", tok.status, tok.raw)
	}
}
