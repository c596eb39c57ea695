package bench

import (
	"math"
	"slices"
	"sync"
	"time"
)

// Histogram records latencies. Every scenario is bounded in count, so it
// keeps each sample and reports exact nearest-rank percentiles rather than
// bucket approximations. It is safe for concurrent use.
type Histogram struct {
	mu      sync.Mutex
	samples []time.Duration
}

// Record adds one latency.
func (h *Histogram) Record(d time.Duration) {
	h.mu.Lock()
	h.samples = append(h.samples, d)
	h.mu.Unlock()
}

// Merge adds every sample of o.
func (h *Histogram) Merge(o *Histogram) {
	o.mu.Lock()
	s := slices.Clone(o.samples)
	o.mu.Unlock()
	h.mu.Lock()
	h.samples = append(h.samples, s...)
	h.mu.Unlock()
}

// Count returns the number of samples.
func (h *Histogram) Count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.samples)
}

// Latency is a summary of a histogram, in milliseconds so that JSON
// readers need no unit conversion.
type Latency struct {
	Count  int     `json:"count"`
	MeanMs float64 `json:"meanMs"`
	P50Ms  float64 `json:"p50Ms"`
	P90Ms  float64 `json:"p90Ms"`
	P99Ms  float64 `json:"p99Ms"`
	MaxMs  float64 `json:"maxMs"`
}

// Summary returns the count, mean, p50, p90, p99 and maximum. An empty
// histogram summarises to zeros.
func (h *Histogram) Summary() Latency {
	h.mu.Lock()
	s := slices.Clone(h.samples)
	h.mu.Unlock()
	if len(s) == 0 {
		return Latency{}
	}
	slices.Sort(s)
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	return Latency{
		Count:  len(s),
		MeanMs: ms(sum / time.Duration(len(s))),
		P50Ms:  ms(percentile(s, 50)),
		P90Ms:  ms(percentile(s, 90)),
		P99Ms:  ms(percentile(s, 99)),
		MaxMs:  ms(s[len(s)-1]),
	}
}

// percentile returns the nearest-rank p-th percentile of sorted samples:
// the smallest sample with at least p% of the samples at or below it.
func percentile(sorted []time.Duration, p float64) time.Duration {
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = max(rank, 1)
	rank = min(rank, len(sorted))
	return sorted[rank-1]
}

// ms converts a duration to milliseconds rounded to microseconds.
func ms(d time.Duration) float64 {
	return math.Round(float64(d)/float64(time.Microsecond)) / 1000
}
