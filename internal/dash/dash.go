// Package dash is the live terminal dashboard of `pds dashboard`. It
// shows the status report (internal/status), refreshed every few seconds,
// with the rates derived from two consecutive reports. It needs only a
// keyboard (q quits, r refreshes), so it works over SSH.
package dash

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	tea "charm.land/bubbletea/v2"

	"stratus/internal/status"
)

// Fetch returns a fresh status report.
type Fetch func(ctx context.Context) (*status.Report, error)

// Options configure a dashboard.
type Options struct {
	Fetch Fetch
	// Interval is the time between refreshes (2s when zero).
	Interval time.Duration
	Input    io.Reader
	Output   io.Writer
}

// fetchTimeout bounds one refresh, so a server that stops answering shows
// up as an error instead of a frozen screen.
const fetchTimeout = 5 * time.Second

// Run shows the dashboard until the user quits or ctx ends.
func Run(ctx context.Context, o Options) error {
	if o.Interval <= 0 {
		o.Interval = 2 * time.Second
	}
	m := &model{fetch: o.Fetch, interval: o.Interval}
	p := tea.NewProgram(m, tea.WithContext(ctx), tea.WithInput(o.Input), tea.WithOutput(o.Output))
	_, err := p.Run()
	if errors.Is(err, tea.ErrProgramKilled) && ctx.Err() != nil {
		return nil
	}
	return err
}

// reportMsg carries the result of one fetch.
type reportMsg struct {
	r   *status.Report
	err error
	at  time.Time
}

// tickMsg asks for the next refresh; gen discards ticks scheduled before
// a manual refresh, so refreshing never doubles the rate.
type tickMsg struct{ gen int }

type model struct {
	fetch    Fetch
	interval time.Duration

	report   *status.Report
	at       time.Time
	err      error
	fetching bool
	gen      int
	width    int

	// Rates derived from the last two reports of the same server run.
	writesPerSec, requestsPerSec float64
	haveRates                    bool
}

func (m *model) Init() tea.Cmd {
	m.fetching = true
	return m.fetchCmd()
}

func (m *model) fetchCmd() tea.Cmd {
	fetch := m.fetch
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(context.Background(), fetchTimeout)
		defer cancel()
		r, err := fetch(ctx)
		return reportMsg{r: r, err: err, at: time.Now()}
	}
}

func (m *model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.KeyPressMsg:
		switch msg.String() {
		case "q", "esc", "ctrl+c":
			return m, tea.Quit
		case "r":
			if !m.fetching {
				m.fetching = true
				return m, m.fetchCmd()
			}
		}
	case tea.WindowSizeMsg:
		m.width = msg.Width
	case reportMsg:
		m.fetching = false
		m.err = msg.err
		if msg.err == nil {
			m.rates(msg.r, msg.at)
			m.report, m.at = msg.r, msg.at
		}
		m.gen++
		gen := m.gen
		return m, tea.Tick(m.interval, func(time.Time) tea.Msg { return tickMsg{gen} })
	case tickMsg:
		if msg.gen == m.gen && !m.fetching {
			m.fetching = true
			return m, m.fetchCmd()
		}
	}
	return m, nil
}

// rates computes writes and requests per second from the previous report
// to r, when both come from the same run of the server.
func (m *model) rates(r *status.Report, at time.Time) {
	prev := m.report
	m.haveRates = false
	if prev == nil || r.Offline || prev.Offline || r.StartedAt == nil || prev.StartedAt == nil || !r.StartedAt.Equal(*prev.StartedAt) {
		return
	}
	dt := at.Sub(m.at).Seconds()
	if dt <= 0 {
		return
	}
	m.writesPerSec = float64(r.Activity.Commits-prev.Activity.Commits) / dt
	m.requestsPerSec = float64(r.Activity.Requests-prev.Activity.Requests) / dt
	m.haveRates = true
}

func (m *model) View() tea.View {
	v := tea.NewView(m.render(time.Now()))
	v.AltScreen = true
	return v
}

// render draws the screen as plain text (no colours), so it reads the
// same on any terminal.
func (m *model) render(now time.Time) string {
	var b strings.Builder
	r := m.report
	if r == nil {
		b.WriteString("Stratus dashboard: loading status...\n")
		if m.err != nil {
			fmt.Fprintf(&b, "\nerror: %v\n", m.err)
		}
		b.WriteString("\nq quit · r refresh\n")
		return m.clip(b.String())
	}
	state := "online"
	switch {
	case r.Offline:
		state = "OFFLINE (read from the data directory)"
	case r.StartedAt != nil:
		state = "online, up " + status.Duration(time.Duration(r.UptimeSeconds)*time.Second)
	}
	fmt.Fprintf(&b, "Stratus %s · %s · %s\n", r.Version, state, r.PublicURL)
	fmt.Fprintf(&b, "%s  %s  [%s]\n\n", r.Account.Handle, r.Account.DID, r.Account.Status)

	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	writes, requests := "-", "-"
	if m.haveRates {
		writes, requests = fmt.Sprintf("%.1f", m.writesPerSec), fmt.Sprintf("%.1f", m.requestsPerSec)
	}
	fmt.Fprintf(tw, "Writes/s\t%s\tFirehose seq\t%d\tSessions\t%d\n", writes, r.Firehose.LatestSeq, r.Sessions.Active)
	fmt.Fprintf(tw, "Requests/s\t%s\tSubscribers\t%d\tApp passwords\t%d\n", requests, r.Firehose.Subscribers, r.Sessions.AppPasswords)
	fmt.Fprintf(tw, "Commits\t%d\tOldest seq\t%d\tOAuth grants\t%d\n", r.Activity.Commits, r.Firehose.OldestSeq, r.Sessions.OAuthGrants)
	tw.Flush()

	b.WriteString("\n")
	last := "never"
	if r.Account.LastCommitAt != nil {
		last = status.Duration(now.Sub(*r.Account.LastCommitAt)) + " ago"
	}
	fmt.Fprintf(&b, "Repository  %d records · rev %s · last commit %s\n", r.Account.Records, r.Account.Rev, last)
	fmt.Fprintf(&b, "Storage     database %s (WAL %s) · %d blobs, %s on %s\n",
		status.Bytes(r.Storage.DatabaseBytes), status.Bytes(r.Storage.WALBytes), r.Storage.Blobs, status.Bytes(r.Storage.BlobBytes), r.Storage.BlobStore)
	doc := "not checked"
	if k := r.Identity.KeyMatches; k != nil && *k {
		doc = "DID document names the signing key"
	} else if k != nil {
		doc = "DID document names ANOTHER key"
	}
	fmt.Fprintf(&b, "Identity    did:%s · %s\n", r.Identity.Method, doc)

	b.WriteString("\nRecent events\n")
	tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	for _, ev := range r.RecentEvents {
		fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\n", ev.Seq, ev.Type, ev.Time.Local().Format("15:04:05"), ev.Detail)
	}
	if len(r.RecentEvents) == 0 {
		fmt.Fprintln(tw, "  (none retained)")
	}
	tw.Flush()

	if len(r.Problems)+len(r.Warnings) > 0 {
		b.WriteString("\n")
	}
	for _, p := range r.Problems {
		fmt.Fprintf(&b, "PROBLEM: %s\n", p)
	}
	for _, w := range r.Warnings {
		fmt.Fprintf(&b, "warning: %s\n", w)
	}
	b.WriteString("\n")
	if m.err != nil {
		fmt.Fprintf(&b, "refresh failed: %v\n", m.err)
	}
	fmt.Fprintf(&b, "q quit · r refresh · updated %s\n", m.at.Local().Format("15:04:05"))
	return m.clip(b.String())
}

// clip cuts lines to the terminal width, so a long line never wraps and
// pushes the screen out of place.
func (m *model) clip(s string) string {
	if m.width <= 0 {
		return s
	}
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		if r := []rune(l); len(r) > m.width {
			lines[i] = string(r[:m.width])
		}
	}
	return strings.Join(lines, "\n")
}
