package bench

import "fmt"

// BudgetLine is one line of the performance budget with the figure a run
// measured for it.
type BudgetLine struct {
	Budget   string `json:"budget"`
	Measured string `json:"measured"`
	Met      bool   `json:"met"`
}

// Budget targets (the README's Performance section).
const (
	budgetSeqPerSec       = 2000
	budgetConcPerSec      = 3000
	budgetReadsPerSec     = 15000
	budgetExportMs        = 100
	budgetRSSKB           = 80 * 1024
	budgetFirehoseRatio   = 0.8
	budgetWritesBeforeRSS = 10000
)

// budget compares a run's results with the budget. Lines whose scenario
// did not run, or failed, are left out; the figures are only comparable
// with the budget on the machine and at the counts the README states.
func budget(results []Result) []BudgetLine {
	row := func(name string, i int) *Result {
		n := 0
		for k := range results {
			if results[k].Name == name {
				if n == i {
					if results[k].Errors > 0 || results[k].Count == 0 {
						return nil
					}
					return &results[k]
				}
				n++
			}
		}
		return nil
	}
	var out []BudgetLine
	seq := row(CreateSeq, 0)
	if seq != nil {
		out = append(out, BudgetLine{fmt.Sprintf("sequential creates ≥ %d/s", budgetSeqPerSec),
			fmt.Sprintf("%.0f/s", seq.PerSecond), seq.PerSecond >= budgetSeqPerSec})
	}
	if c := row(CreateConcurrent, 0); c != nil {
		l := BudgetLine{Budget: fmt.Sprintf("%s ≥ %d/s, faster than sequential", c.Title, budgetConcPerSec),
			Measured: fmt.Sprintf("%.0f/s", c.PerSecond), Met: c.PerSecond >= budgetConcPerSec}
		if seq != nil {
			l.Measured += fmt.Sprintf(" (%.2f× sequential)", c.PerSecond/seq.PerSecond)
			l.Met = l.Met && c.PerSecond > seq.PerSecond
		}
		out = append(out, l)
	}
	if g := row(GetRecord, 0); g != nil {
		out = append(out, BudgetLine{fmt.Sprintf("%s ≥ %d/s", g.Title, budgetReadsPerSec),
			fmt.Sprintf("%.0f/s", g.PerSecond), g.PerSecond >= budgetReadsPerSec})
	}
	if e := row(Export, 0); e != nil {
		out = append(out, BudgetLine{fmt.Sprintf("full export of a %d-record repository ≤ %d ms (p50)", e.Records, budgetExportMs),
			fmt.Sprintf("%.1f ms", e.Latency.P50Ms), e.Latency.P50Ms <= budgetExportMs})
		if e.RSSKB > 0 {
			out = append(out, BudgetLine{fmt.Sprintf("server RSS after %d records ≤ %d MB (budget: after %d writes)", e.Records, budgetRSSKB/1024, budgetWritesBeforeRSS),
				mb(e.RSSKB), e.RSSKB <= budgetRSSKB})
		}
	}
	if f := row(Firehose, 0); f != nil && seq != nil && seq.PerSecond > 0 {
		ratio := f.PerSecond / seq.PerSecond
		out = append(out, BudgetLine{fmt.Sprintf("write rate with subscribers (%s) ≥ %.0f%% of without", f.Title, budgetFirehoseRatio*100),
			fmt.Sprintf("%.0f%%", ratio*100), ratio >= budgetFirehoseRatio})
	}
	return out
}
