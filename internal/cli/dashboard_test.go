//go:build unix

package cli_test

import (
	"strings"
	"testing"
)

// startFullPTY starts the binary with stdin, stdout and stderr all on a
// new 120x40 terminal, as an operator's SSH session runs it.
func startFullPTY(t *testing.T, bin string, args ...string) *ptyProc {
	t.Helper()
	return launchPTY(t, bin, nil, false, args...)
}

// testDashboardPTY runs pds dashboard on a terminal against a running
// server: it shows the account, refreshes on r and quits on q.
func testDashboardPTY(t *testing.T, bin string) {
	p := startPDS(t, bin)
	term := startFullPTY(t, bin, "dashboard", "--interval", "500ms", "--server", p.base, "--admin-token", p.acct.AdminToken)
	at := term.waitText(p.acct.DID, 0)
	at = term.waitText("q quit", at)
	for _, want := range []string{"Writes/s", "Firehose seq", "Subscribers", "Recent events", "online, up"} {
		if !strings.Contains(term.text(), want) {
			t.Errorf("dashboard lacks %q:\n%s", want, term.text())
		}
	}
	// A write shows up among the recent events.
	var out struct {
		URI string `json:"uri"`
	}
	call(t, "POST", p.base+"/xrpc/com.atproto.repo.createRecord", p.acct.AdminToken,
		map[string]any{"repo": p.acct.DID, "collection": "app.bsky.feed.post", "record": map[string]any{"text": "dash", "createdAt": "2026-01-01T00:00:00.000Z"}}, &out)
	term.press("r", "create app.bsky.feed.post/", at)
	term.send("q")
	if code, _ := term.wait(); code != 0 {
		t.Fatalf("dashboard exited %d:\n%s", code, term.text())
	}
}

// testDashboardNotTerminal checks that without a terminal the dashboard
// prints the pds status report once.
func testDashboardNotTerminal(t *testing.T, bin string) {
	p := startPDS(t, bin)
	r := p.mustAdmin(t, "dashboard")
	for _, want := range []string{p.acct.DID, "Firehose", "No problems."} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("dashboard without a terminal lacks %q:\n%s", want, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "\x1b[") {
		t.Errorf("dashboard without a terminal wrote control sequences:\n%q", r.stdout)
	}
}
