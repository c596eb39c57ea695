package dash

import (
	"context"
	"strings"
	"testing"
	"time"

	tea "charm.land/bubbletea/v2"

	"stratus/internal/status"
)

// TestModel drives the dashboard's model without a terminal: rates come
// from two reports of the same server run, q quits, and a stale tick does
// not start a second refresh loop.
func TestModel(t *testing.T) {
	started := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	report := func(commits, requests int64) *status.Report {
		return &status.Report{Version: "1.0", StartedAt: &started, PublicURL: "https://pds.test",
			Account:      status.Account{DID: "did:web:pds.test", Handle: "alice.test", Status: "active"},
			Activity:     status.Activity{Commits: commits, Requests: requests},
			RecentEvents: []status.Event{{Seq: 7, Type: "commit", Detail: "create app.bsky.feed.post/x"}},
			Problems:     []string{"identity: something is wrong"}}
	}
	m := &model{fetch: func(context.Context) (*status.Report, error) { return report(0, 0), nil }, interval: time.Second}
	if m.Init() == nil {
		t.Fatal("Init does not fetch")
	}
	t0 := time.Now()
	m.Update(reportMsg{r: report(10, 100), at: t0})
	if m.haveRates {
		t.Error("rates from a single report")
	}
	_, cmd := m.Update(reportMsg{r: report(20, 300), at: t0.Add(2 * time.Second)})
	if !m.haveRates || m.writesPerSec != 5 || m.requestsPerSec != 100 {
		t.Errorf("rates = %v %v %v, want 5 and 100", m.haveRates, m.writesPerSec, m.requestsPerSec)
	}
	if cmd == nil {
		t.Error("no tick scheduled after a report")
	}
	out := m.render(t0)
	for _, want := range []string{"did:web:pds.test", "alice.test", "Writes/s    5.0", "create app.bsky.feed.post/x", "PROBLEM: identity", "q quit"} {
		if !strings.Contains(out, want) {
			t.Errorf("screen lacks %q:\n%s", want, out)
		}
	}

	// A tick from before the last report is ignored; the current one fetches.
	if _, cmd := m.Update(tickMsg{gen: m.gen - 1}); cmd != nil {
		t.Error("stale tick started a refresh")
	}
	if _, cmd := m.Update(tickMsg{gen: m.gen}); cmd == nil || !m.fetching {
		t.Error("current tick did not refresh")
	}
	if _, cmd := m.Update(tea.KeyPressMsg{Code: 'r', Text: "r"}); cmd != nil {
		t.Error("r started a second fetch while one is in flight")
	}

	// A restarted server resets its counters: no rate across the restart.
	later := started.Add(time.Hour)
	r := report(1, 1)
	r.StartedAt = &later
	m.Update(reportMsg{r: r, at: t0.Add(4 * time.Second)})
	if m.haveRates {
		t.Error("rates across a server restart")
	}

	_, cmd = m.Update(tea.KeyPressMsg{Code: 'q', Text: "q"})
	if cmd == nil {
		t.Fatal("q does nothing")
	}
	if _, ok := cmd().(tea.QuitMsg); !ok {
		t.Error("q does not quit")
	}

	// Lines are cut to the terminal width.
	m.Update(tea.WindowSizeMsg{Width: 20, Height: 10})
	for _, l := range strings.Split(m.render(t0), "\n") {
		if len([]rune(l)) > 20 {
			t.Errorf("line wider than the terminal: %q", l)
		}
	}
}
