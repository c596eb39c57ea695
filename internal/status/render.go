package status

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteText prints the report as aligned sections for a person to read.
// now is the time relative ages are computed from.
func WriteText(w io.Writer, r *Report, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	state := "online"
	if r.Offline {
		state = "OFFLINE (no server answered; read from the data directory)"
	} else if r.StartedAt != nil {
		state += ", up " + Duration(time.Duration(r.UptimeSeconds)*time.Second)
	}
	fmt.Fprintf(tw, "Stratus %s\t%s\n", r.Version, state)
	fmt.Fprintf(tw, "Public URL\t%s\n", r.PublicURL)
	if r.MetricsAddr != "" {
		fmt.Fprintf(tw, "Metrics\thttp://%s/metrics\n", r.MetricsAddr)
	}

	a := r.Account
	section(tw, "Account")
	row(tw, "DID", a.DID)
	row(tw, "Handle", a.Handle)
	row(tw, "Status", a.Status)
	row(tw, "Revision", a.Rev)
	row(tw, "Head", a.Head)
	if a.LastCommitAt != nil {
		row(tw, "Last commit", Ago(*a.LastCommitAt, now))
	}
	colls := make([]string, 0, len(a.Collections))
	for _, c := range a.Collections {
		colls = append(colls, fmt.Sprintf("%s %d", c.Name, c.Records))
	}
	row(tw, "Records", fmt.Sprint(a.Records))
	for _, c := range colls {
		row(tw, "", c)
	}

	s := r.Storage
	section(tw, "Storage")
	row(tw, "Database", fmt.Sprintf("%s (write-ahead log %s)", Bytes(s.DatabaseBytes), Bytes(s.WALBytes)))
	row(tw, "Blobs", fmt.Sprintf("%d, %s, on %s (%d unreferenced, %d missing)", s.Blobs, Bytes(s.BlobBytes), s.BlobStore, s.UnreferencedBlobs, s.MissingBlobs))

	f := r.Firehose
	section(tw, "Firehose")
	row(tw, "Latest seq", fmt.Sprint(f.LatestSeq))
	oldest := "none retained"
	if f.OldestSeq > 0 {
		oldest = fmt.Sprint(f.OldestSeq)
	}
	row(tw, "Oldest seq", fmt.Sprintf("%s (retention %s)", oldest, Duration(time.Duration(f.RetentionSeconds)*time.Second)))
	if !r.Offline {
		row(tw, "Subscribers", fmt.Sprint(f.Subscribers))
	}

	section(tw, "Sessions")
	row(tw, "Active sessions", fmt.Sprint(r.Sessions.Active))
	row(tw, "App passwords", fmt.Sprint(r.Sessions.AppPasswords))
	row(tw, "OAuth grants", fmt.Sprint(r.Sessions.OAuthGrants))

	section(tw, "Crawlers")
	if len(r.Crawlers) == 0 {
		fmt.Fprintln(tw, "  (none configured)")
	}
	for _, c := range r.Crawlers {
		switch {
		case c.LastAskedAt == nil:
			row(tw, c.URL, "not asked since the server started")
		case c.LastError != "":
			row(tw, c.URL, "asked "+Ago(*c.LastAskedAt, now)+", failed: "+c.LastError)
		default:
			row(tw, c.URL, "asked "+Ago(*c.LastAskedAt, now))
		}
	}

	id := r.Identity
	section(tw, "Identity")
	row(tw, "Method", "did:"+id.Method)
	row(tw, "Signing key", id.SigningKey)
	doc := "not checked"
	if id.KeyMatches != nil {
		if *id.KeyMatches {
			doc = "names the signing key"
		} else {
			doc = "names " + id.DocumentKey + " (MISMATCH)"
		}
	}
	row(tw, "DID document", doc)
	row(tw, "Resolved at", id.Source)

	section(tw, "Recent events")
	if len(r.RecentEvents) == 0 {
		fmt.Fprintln(tw, "  (none retained)")
	}
	for _, ev := range r.RecentEvents {
		fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\n", ev.Seq, ev.Type, ev.Time.Local().Format("2006-01-02 15:04:05"), ev.Detail)
	}

	fmt.Fprintln(tw)
	for _, p := range r.Problems {
		fmt.Fprintf(tw, "PROBLEM: %s\n", p)
	}
	for _, wn := range r.Warnings {
		fmt.Fprintf(tw, "warning: %s\n", wn)
	}
	if r.OK() {
		fmt.Fprintln(tw, "No problems.")
	}
	return tw.Flush()
}

func section(w io.Writer, name string) { fmt.Fprintf(w, "\n%s\n", name) }

func row(w io.Writer, k, v string) { fmt.Fprintf(w, "  %s\t%s\n", k, v) }

// Bytes formats a byte count in binary units (1.5 MiB).
func Bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

// Duration formats a duration coarsely: 3d4h, 2h5m, 4m10s, 12s.
func Duration(d time.Duration) string {
	d = d.Round(time.Second)
	switch {
	case d >= 24*time.Hour && d%(24*time.Hour) < time.Hour:
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	case d >= 24*time.Hour:
		return fmt.Sprintf("%dd%dh", d/(24*time.Hour), (d%(24*time.Hour))/time.Hour)
	case d >= time.Hour:
		return fmt.Sprintf("%dh%dm", d/time.Hour, (d%time.Hour)/time.Minute)
	case d >= time.Minute:
		return fmt.Sprintf("%dm%ds", d/time.Minute, (d%time.Minute)/time.Second)
	}
	return fmt.Sprintf("%ds", d/time.Second)
}

// Ago formats t as a local time with its age ("2026-01-02 15:04:05, 3m4s ago").
func Ago(t, now time.Time) string {
	age := now.Sub(t)
	suffix := " ago"
	if age < 0 {
		age, suffix = -age, " from now"
	}
	return t.Local().Format("2006-01-02 15:04:05") + ", " + strings.TrimSpace(Duration(age)) + suffix
}
