package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"
)

// Report is the outcome of a run, as printed in markdown or JSON.
type Report struct {
	Server  string    `json:"server"`
	Local   bool      `json:"local"`
	DID     string    `json:"did"`
	Started time.Time `json:"started"`
	Machine Machine   `json:"machine"`
	// Results has one row per measured operation, in the order they ran.
	Results []Result `json:"results"`
	// RSS is the server's memory, when the server runs on this machine.
	RSS *RSS `json:"rss,omitempty"`
	// Profiles lists the pprof files written (--profile).
	Profiles []string `json:"profiles,omitempty"`
	// Errors counts failed requests over all scenarios; any makes the
	// command fail.
	Errors int `json:"errors"`
	// Notes are remarks about the whole run (e.g. a scenario skipped).
	Notes []string `json:"notes,omitempty"`
	// Budget compares the figures with the project's performance budget.
	Budget []BudgetLine `json:"budget,omitempty"`
}

// Machine describes where the load generator ran.
type Machine struct {
	OS        string `json:"os"`
	Arch      string `json:"arch"`
	CPUs      int    `json:"cpus"`
	CPUModel  string `json:"cpuModel,omitempty"`
	GoVersion string `json:"goVersion"`
}

// Result is one measured operation of a scenario.
type Result struct {
	// Scenario is the number of the scenario (1–7) in the README.
	Scenario int    `json:"scenario"`
	Name     string `json:"name"`
	Title    string `json:"title"`
	Count    int    `json:"count"`
	Errors   int    `json:"errors"`
	// FirstError is the first failure's message, if any.
	FirstError string  `json:"firstError,omitempty"`
	Seconds    float64 `json:"seconds"`
	// PerSecond is Count divided by Seconds (operations, or records for
	// batches).
	PerSecond float64 `json:"perSecond"`
	Unit      string  `json:"unit"`
	Latency   Latency `json:"latency"`
	Bytes     int64   `json:"bytes,omitempty"`
	// Records is the size of the repository an export held.
	Records int `json:"records,omitempty"`
	// RSSKB is the server's resident memory right after the operation.
	RSSKB int64    `json:"rssKB,omitempty"`
	Notes []string `json:"notes,omitempty"`
}

// RSS summarises the sampled memory of the server process.
type RSS struct {
	PID          int    `json:"pid"`
	Samples      int    `json:"samples"`
	MaxSampledKB int64  `json:"maxSampledKB"`
	LastKB       int64  `json:"lastKB"`
	PeakKB       int64  `json:"peakKB"` // VmHWM at the end
	Error        string `json:"error,omitempty"`
}

func machine() Machine {
	m := Machine{OS: runtime.GOOS, Arch: runtime.GOARCH, CPUs: runtime.NumCPU(), GoVersion: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}

// WriteJSON writes the report as one indented JSON object.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteMarkdown writes the report as a markdown table followed by the
// notes of each row.
func (r *Report) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	where := r.Server
	if r.Local {
		where += " (local, started by the tool)"
	}
	fmt.Fprintf(&b, "Server: %s, account %s\n", where, r.DID)
	fmt.Fprintf(&b, "Machine: %s/%s, %d CPUs", r.Machine.OS, r.Machine.Arch, r.Machine.CPUs)
	if r.Machine.CPUModel != "" {
		fmt.Fprintf(&b, " (%s)", r.Machine.CPUModel)
	}
	fmt.Fprintf(&b, ", %s, %s\n\n", r.Machine.GoVersion, r.Started.UTC().Format(time.RFC3339))
	b.WriteString("| # | operation | count | errors | rate | p50 ms | p90 ms | p99 ms | max ms | server RSS |\n")
	b.WriteString("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, res := range r.Results {
		rss := "–"
		if res.RSSKB > 0 {
			rss = mb(res.RSSKB)
		}
		fmt.Fprintf(&b, "| %d | %s | %d | %d | %s | %s | %s | %s | %s | %s |\n",
			res.Scenario, res.Title, res.Count, res.Errors, rate(res.PerSecond, res.Unit),
			num(res.Latency.P50Ms), num(res.Latency.P90Ms), num(res.Latency.P99Ms), num(res.Latency.MaxMs), rss)
	}
	b.WriteString("\n")
	for _, res := range r.Results {
		for _, n := range res.Notes {
			fmt.Fprintf(&b, "- %d %s: %s\n", res.Scenario, res.Name, n)
		}
		if res.FirstError != "" {
			fmt.Fprintf(&b, "- %d %s: first error: %s\n", res.Scenario, res.Name, res.FirstError)
		}
	}
	if r.RSS != nil {
		fmt.Fprintf(&b, "- server memory (pid %d): peak resident %s (VmHWM), largest sampled %s, at the end %s over %d samples",
			r.RSS.PID, mb(r.RSS.PeakKB), mb(r.RSS.MaxSampledKB), mb(r.RSS.LastKB), r.RSS.Samples)
		if r.RSS.Error != "" {
			fmt.Fprintf(&b, " (%s)", r.RSS.Error)
		}
		b.WriteString("\n")
	}
	for _, p := range r.Profiles {
		fmt.Fprintf(&b, "- profile: %s\n", p)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "- %s\n", n)
	}
	if len(r.Budget) > 0 {
		b.WriteString("\n| budget | measured | met |\n|---|---:|---|\n")
		for _, l := range r.Budget {
			met := "yes"
			if !l.Met {
				met = "**no**"
			}
			fmt.Fprintf(&b, "| %s | %s | %s |\n", l.Budget, l.Measured, met)
		}
	}
	if r.Errors > 0 {
		fmt.Fprintf(&b, "\n**%d requests failed.**\n", r.Errors)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func mb(kb int64) string { return fmt.Sprintf("%.1f MB", float64(kb)/1024) }

func num(v float64) string {
	switch {
	case v == 0:
		return "–"
	case v < 10:
		return fmt.Sprintf("%.2f", v)
	case v < 100:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.0f", v)
	}
}

func rate(v float64, unit string) string {
	if v == 0 {
		return "–"
	}
	if v < 10 {
		return fmt.Sprintf("%.2f %s", v, unit)
	}
	return fmt.Sprintf("%.0f %s", v, unit)
}
