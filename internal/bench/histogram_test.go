package bench

import (
	"testing"
	"time"
)

func TestHistogramSummary(t *testing.T) {
	msN := func(ns ...int) []time.Duration {
		var out []time.Duration
		for _, n := range ns {
			out = append(out, time.Duration(n)*time.Millisecond)
		}
		return out
	}
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		// Recorded out of order: 100, 99, ..., 1 ms.
		hundred[i] = time.Duration(100-i) * time.Millisecond
	}
	thousand := make([]time.Duration, 1000)
	for i := range thousand {
		thousand[i] = time.Duration(i+1) * time.Microsecond
	}
	tests := []struct {
		name    string
		samples []time.Duration
		want    Latency
	}{
		{"empty", nil, Latency{}},
		{"one", msN(7), Latency{Count: 1, MeanMs: 7, P50Ms: 7, P90Ms: 7, P99Ms: 7, MaxMs: 7}},
		{"two", msN(1, 3), Latency{Count: 2, MeanMs: 2, P50Ms: 1, P90Ms: 3, P99Ms: 3, MaxMs: 3}},
		{"ten", msN(10, 9, 8, 7, 6, 5, 4, 3, 2, 1), Latency{Count: 10, MeanMs: 5.5, P50Ms: 5, P90Ms: 9, P99Ms: 10, MaxMs: 10}},
		{"hundred", hundred, Latency{Count: 100, MeanMs: 50.5, P50Ms: 50, P90Ms: 90, P99Ms: 99, MaxMs: 100}},
		{"thousand microseconds", thousand, Latency{Count: 1000, MeanMs: 0.501, P50Ms: 0.5, P90Ms: 0.9, P99Ms: 0.99, MaxMs: 1}},
		{"outlier", msN(1, 1, 1, 1, 1, 1, 1, 1, 1, 1000), Latency{Count: 10, MeanMs: 100.9, P50Ms: 1, P90Ms: 1, P99Ms: 1000, MaxMs: 1000}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h Histogram
			for _, d := range tt.samples {
				h.Record(d)
			}
			if got := h.Summary(); got != tt.want {
				t.Errorf("Summary() = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestHistogramMerge(t *testing.T) {
	var a, b Histogram
	for i := 1; i <= 50; i++ {
		a.Record(time.Duration(i) * time.Millisecond)
		b.Record(time.Duration(50+i) * time.Millisecond)
	}
	a.Merge(&b)
	got := a.Summary()
	if got.Count != 100 || got.P50Ms != 50 || got.P99Ms != 99 || got.MaxMs != 100 {
		t.Errorf("merged summary %+v", got)
	}
	if b.Count() != 50 {
		t.Errorf("merge changed its source: %d samples", b.Count())
	}
}

func TestPercentileRanks(t *testing.T) {
	s := []time.Duration{1, 2, 3, 4}
	for _, tt := range []struct {
		p    float64
		want time.Duration
	}{{0, 1}, {1, 1}, {25, 1}, {26, 2}, {50, 2}, {75, 3}, {99, 4}, {100, 4}} {
		if got := percentile(s, tt.p); got != tt.want {
			t.Errorf("p%v = %v, want %v", tt.p, got, tt.want)
		}
	}
}
