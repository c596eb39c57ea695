package bench

import (
	"strings"
	"testing"
)

func TestBudget(t *testing.T) {
	ok := []Result{
		{Name: CreateSeq, Title: "createRecord, sequential", Count: 10, PerSecond: 2500},
		{Name: Firehose, Title: "createRecord, sequential, 100 subscribers", Count: 10, PerSecond: 2100},
		{Name: Firehose, Title: "firehose delivery", Count: 1000, PerSecond: 1},
		{Name: CreateConcurrent, Title: "createRecord, 4 writers", Count: 10, PerSecond: 3500},
		{Name: GetRecord, Title: "getRecord, 8 readers", Count: 10, PerSecond: 16000},
		{Name: Export, Count: 5, Records: 10000, Latency: Latency{P50Ms: 80}, RSSKB: 70 * 1024},
	}
	lines := budget(ok)
	if len(lines) != 6 {
		t.Fatalf("%d lines: %+v", len(lines), lines)
	}
	for _, l := range lines {
		if !l.Met {
			t.Errorf("%s: %s not met", l.Budget, l.Measured)
		}
	}

	slow := []Result{
		{Name: CreateSeq, Count: 10, PerSecond: 1000},
		{Name: Firehose, Count: 10, PerSecond: 700},
		{Name: CreateConcurrent, Count: 10, PerSecond: 900},     // slower than sequential
		{Name: GetRecord, Count: 10, PerSecond: 100, Errors: 1}, // failed: left out
		{Name: Export, Count: 5, Records: 10000, Latency: Latency{P50Ms: 150}, RSSKB: 90 * 1024},
	}
	got := map[string]bool{}
	for _, l := range budget(slow) {
		if l.Met {
			t.Errorf("%s: %s met", l.Budget, l.Measured)
		}
		got[strings.Fields(l.Budget)[0]] = true
	}
	for _, w := range []string{"sequential", "full", "server", "write"} {
		if !got[w] {
			t.Errorf("no budget line starting %q", w)
		}
	}
	if got["getRecord,"] {
		t.Error("a failed scenario was compared with the budget")
	}
	if len(budget(nil)) != 0 {
		t.Error("budget of no results")
	}
}
