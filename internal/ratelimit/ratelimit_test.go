package ratelimit

import (
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"stratus/internal/pdserr"
)

// createSession are the reference PDS's limits on
// com.atproto.server.createSession. The period of each is a multiple of
// buckets seconds, so bucket edges fall on whole seconds: 10 s for the
// 5-minute window, 2880 s for the day.
var createSession = []Window{
	{Limit: 30, Period: 5 * time.Minute},
	{Limit: 300, Period: 24 * time.Hour},
}

// start is where fake clocks begin. The limiter's buckets are aligned to the
// time it was created, so offsets from start are offsets into the buckets.
var start = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// fakeClock is a settable clock, safe for concurrent use.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: start} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// At sets the clock to start+d.
func (c *fakeClock) At(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = start.Add(d)
}

// step is some attempts at one moment: at is the offset from start, n the
// number of attempts on the key, allowed how many of them (the first ones)
// must be admitted.
type step struct {
	at      time.Duration
	n       int
	allowed int
}

func runSteps(t *testing.T, l *Limiter, clock *fakeClock, key string, steps []step) {
	t.Helper()
	for i, s := range steps {
		clock.At(s.at)
		for j := range s.n {
			d := l.Allow(key)
			if want := j < s.allowed; d.Allowed != want {
				t.Fatalf("step %d (t=%v) attempt %d: Allowed = %v, want %v (decision %+v)", i, s.at, j+1, d.Allowed, want, d)
			}
		}
	}
}

func TestWindows(t *testing.T) {
	tests := []struct {
		name    string
		windows []Window
		steps   []step
	}{
		{
			name:    "30th allowed, 31st refused",
			windows: createSession,
			steps:   []step{{0, 31, 30}},
		},
		{
			// Attempts in bucket 0 ([0s, 10s)) are remembered until the
			// ring no longer covers it: 31 buckets = 310 s.
			name:    "refused until the oldest bucket leaves the window",
			windows: createSession,
			steps: []step{
				{0, 30, 30},
				{5 * time.Minute, 1, 0},
				{310*time.Second - 1, 1, 0},
				{310 * time.Second, 31, 30},
			},
		},
		{
			name:    "window slides rather than resetting",
			windows: createSession,
			steps: []step{
				{0, 10, 10},
				{150 * time.Second, 20, 20},
				{151 * time.Second, 1, 0},
				// Bucket 0 has left; bucket 15 (20 attempts) has not.
				{310 * time.Second, 11, 10},
				{460*time.Second - 1, 1, 0},
				// Bucket 15 has left; bucket 31 (10 attempts) has not.
				{460 * time.Second, 21, 20},
			},
		},
		{
			name:    "refused attempts are not recorded",
			windows: createSession,
			steps: []step{
				{0, 30, 30},
				{100 * time.Second, 1000, 0},
				{309 * time.Second, 1000, 0},
				{310 * time.Second, 31, 30},
			},
		},
		{
			// 30 attempts every 310 s fit the 5-minute window ten times,
			// then the day is used up. All 300 fall in the day's bucket 0
			// ([0, 2880 s)), which leaves after 31*2880 s = 24h48m.
			name:    "daily window bites after many 5-minute windows",
			windows: createSession,
			steps: func() []step {
				var s []step
				for k := range 10 {
					s = append(s, step{time.Duration(k) * 310 * time.Second, 30, 30})
				}
				return append(s,
					step{3100 * time.Second, 1, 0},
					step{12 * time.Hour, 1, 0},
					step{89280*time.Second - 1, 1, 0},
					step{89280 * time.Second, 31, 30},
				)
			}(),
		},
		{
			name:    "limit of one",
			windows: []Window{{Limit: 1, Period: 30 * time.Second}},
			steps:   []step{{0, 2, 1}, {31*time.Second - 1, 1, 0}, {31 * time.Second, 2, 1}},
		},
		{
			// 1.5 s / 30 = 50 ms buckets; 31 of them is 1.55 s.
			name:    "sub-second buckets",
			windows: []Window{{Limit: 3, Period: 1500 * time.Millisecond}},
			steps: []step{
				{0, 4, 3},
				{1550*time.Millisecond - 1, 1, 0},
				{1550 * time.Millisecond, 4, 3},
			},
		},
		{
			// 7 ns / 30 rounds up to 1 ns buckets, so the ring spans 31 ns:
			// rounding makes a window stricter, never looser.
			name:    "period shorter than buckets rounds up",
			windows: []Window{{Limit: 1, Period: 7}},
			steps:   []step{{0, 2, 1}, {7, 1, 0}, {30, 1, 0}, {31, 1, 1}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newClock()
			l := New(tt.windows, clock.Now)
			runSteps(t, l, clock, "198.51.100.7", tt.steps)
		})
	}
}

func TestIndependentKeys(t *testing.T) {
	clock := newClock()
	l := New(createSession, clock.Now)
	runSteps(t, l, clock, "alice.example.com", []step{{0, 31, 30}})
	runSteps(t, l, clock, "bob.example.com", []step{{0, 31, 30}})
	runSteps(t, l, clock, "", []step{{0, 31, 30}})
	runSteps(t, l, clock, "alice.example.com", []step{{0, 1, 0}})
	if got := l.Len(); got != 3 {
		t.Errorf("Len = %d, want 3", got)
	}
}

// TestLongKeys checks that keys stored as digests stay distinct from each
// other and from short keys.
func TestLongKeys(t *testing.T) {
	long := strings.Repeat("a", 1000)
	keys := []string{
		strings.Repeat("a", maxKeyLen),
		strings.Repeat("a", maxKeyLen+1),
		long + "1",
		long + "2",
		storedKey(long + "3"), // a short key spelled like a digest
	}
	clock := newClock()
	l := New([]Window{{Limit: 1, Period: time.Minute}}, clock.Now)
	for _, k := range keys {
		if !l.Allow(k).Allowed {
			t.Errorf("first attempt on key of length %d refused", len(k))
		}
	}
	for _, k := range keys {
		if l.Allow(k).Allowed {
			t.Errorf("second attempt on key of length %d admitted", len(k))
		}
	}
	if got := l.Len(); got != len(keys) {
		t.Errorf("Len = %d, want %d", got, len(keys))
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for k := range l.keys {
		if len(k) > len("sha256:")+64 {
			t.Errorf("stored key of length %d", len(k))
		}
	}
}

// TestNeverExceedsLimit drives random traffic and checks the two promises
// against an exact log of admitted attempts: no span of Period holds more
// than Limit of them, and a refusal only happens when some window held Limit
// attempts within Period plus one bucket.
func TestNeverExceedsLimit(t *testing.T) {
	windows := []Window{{Limit: 5, Period: 3 * time.Second}, {Limit: 12, Period: 20 * time.Second}}
	for seed := range uint64(20) {
		t.Run(strconv.FormatUint(seed, 10), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 1))
			clock := newClock()
			l := New(windows, clock.Now)
			var admitted []time.Duration
			var at time.Duration
			for range 2000 {
				at += time.Duration(rng.Int64N(int64(400 * time.Millisecond)))
				clock.At(at)
				d := l.Allow("k")
				full := false // some window held Limit within Period plus a bucket
				for _, w := range windows {
					if d.Allowed && countSince(admitted, at-w.Period) >= w.Limit {
						t.Fatalf("t=%v: admitted with %d attempts in the last %v", at, w.Limit, w.Period)
					}
					bucket := (w.Period + buckets - 1) / buckets
					if countSince(admitted, at-w.Period-bucket) >= w.Limit {
						full = true
					}
				}
				if !d.Allowed && !full {
					t.Fatalf("t=%v: refused although no window was full", at)
				}
				if d.Allowed {
					admitted = append(admitted, at)
				}
			}
		})
	}
}

// countSince returns how many of the ascending times are after from.
func countSince(times []time.Duration, from time.Duration) int {
	n := 0
	for i := len(times) - 1; i >= 0 && times[i] > from; i-- {
		n++
	}
	return n
}

func TestDecision(t *testing.T) {
	const policy = "30;w=300, 300;w=86400"
	// pair is {1 per 30 s, 2 per 300 s}: 1 s and 10 s buckets.
	pair := []Window{{Limit: 1, Period: 30 * time.Second}, {Limit: 2, Period: 300 * time.Second}}
	type attempt struct {
		at   time.Duration
		want Decision // Reset as an offset from start, in Reset.Sub(start)
	}
	at := func(d time.Duration) time.Time { return start.Add(d) }
	tests := []struct {
		name     string
		windows  []Window
		attempts []attempt
	}{
		{
			name:    "first attempt",
			windows: createSession,
			attempts: []attempt{
				{0, Decision{Allowed: true, Limit: 30, Remaining: 29, Reset: at(310 * time.Second), Policy: policy}},
			},
		},
		{
			name:    "reset is when the oldest attempt leaves",
			windows: createSession,
			attempts: []attempt{
				{0, Decision{Allowed: true, Limit: 30, Remaining: 29, Reset: at(310 * time.Second), Policy: policy}},
				{25 * time.Second, Decision{Allowed: true, Limit: 30, Remaining: 28, Reset: at(310 * time.Second), Policy: policy}},
				{310 * time.Second, Decision{Allowed: true, Limit: 30, Remaining: 28, Reset: at(330 * time.Second), Policy: policy}},
			},
		},
		{
			name:    "tightest window when one is full",
			windows: pair,
			attempts: []attempt{
				{0, Decision{Allowed: true, Limit: 1, Remaining: 0, Reset: at(31 * time.Second), Policy: "1;w=30, 2;w=300"}},
				{0, Decision{Allowed: false, Limit: 1, Remaining: 0, Reset: at(31 * time.Second), Policy: "1;w=30, 2;w=300"}},
				// Both windows now have 0 left; the later reset is reported.
				{31 * time.Second, Decision{Allowed: true, Limit: 2, Remaining: 0, Reset: at(310 * time.Second), Policy: "1;w=30, 2;w=300"}},
				// Both windows refuse; a retry succeeds only after the later.
				{40 * time.Second, Decision{Allowed: false, Limit: 2, Remaining: 0, Reset: at(310 * time.Second), Policy: "1;w=30, 2;w=300"}},
				// Only the long window refuses.
				{62 * time.Second, Decision{Allowed: false, Limit: 2, Remaining: 0, Reset: at(310 * time.Second), Policy: "1;w=30, 2;w=300"}},
				{310 * time.Second, Decision{Allowed: true, Limit: 1, Remaining: 0, Reset: at(341 * time.Second), Policy: "1;w=30, 2;w=300"}},
			},
		},
		{
			name:    "refused by the day",
			windows: createSession,
			attempts: func() []attempt {
				var a []attempt
				for k := range 10 {
					for range 30 {
						a = append(a, attempt{at: time.Duration(k) * 310 * time.Second})
					}
				}
				a[len(a)-1].want = Decision{Allowed: true, Limit: 300, Remaining: 0, Reset: at(89280 * time.Second), Policy: policy}
				return append(a, attempt{3100 * time.Second, Decision{Allowed: false, Limit: 300, Remaining: 0, Reset: at(89280 * time.Second), Policy: policy}})
			}(),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newClock()
			l := New(tt.windows, clock.Now)
			for i, a := range tt.attempts {
				clock.At(a.at)
				got := l.Allow("k")
				if a.want == (Decision{}) {
					continue
				}
				if got.Allowed != a.want.Allowed || got.Limit != a.want.Limit || got.Remaining != a.want.Remaining ||
					!got.Reset.Equal(a.want.Reset) || got.Policy != a.want.Policy {
					t.Errorf("attempt %d at %v:\n got %+v (reset +%v)\nwant %+v (reset +%v)",
						i, a.at, got, got.Reset.Sub(start), a.want, a.want.Reset.Sub(start))
				}
			}
		})
	}
}

func TestSetHeaders(t *testing.T) {
	tests := []struct {
		name string
		d    Decision
		want map[string]string // nil: no headers at all
	}{
		{
			name: "allowed",
			d:    Decision{Allowed: true, Limit: 30, Remaining: 29, Reset: start.Add(310 * time.Second), Policy: "30;w=300, 300;w=86400"},
			want: map[string]string{
				"ratelimit-limit":     "30",
				"ratelimit-remaining": "29",
				"ratelimit-reset":     strconv.FormatInt(start.Unix()+310, 10),
				"ratelimit-policy":    "30;w=300, 300;w=86400",
			},
		},
		{
			name: "reset rounds up",
			d:    Decision{Limit: 3, Remaining: 0, Reset: start.Add(1550 * time.Millisecond), Policy: "3;w=2"},
			want: map[string]string{
				"ratelimit-limit":     "3",
				"ratelimit-remaining": "0",
				"ratelimit-reset":     strconv.FormatInt(start.Unix()+2, 10),
				"ratelimit-policy":    "3;w=2",
			},
		},
		{name: "zero decision", d: Decision{}, want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			tt.d.SetHeaders(h)
			if len(h) != len(tt.want) {
				t.Errorf("got %d headers %v, want %d", len(h), h, len(tt.want))
			}
			for name, want := range tt.want {
				if got := h.Values(name); len(got) != 1 || got[0] != want {
					t.Errorf("%s = %q, want %q", name, got, want)
				}
			}
		})
	}

	t.Run("from limiter", func(t *testing.T) {
		clock := newClock()
		l := New([]Window{{Limit: 3, Period: 1500 * time.Millisecond}, {Limit: 10, Period: time.Hour}}, clock.Now)
		h := http.Header{}
		l.Allow("k").SetHeaders(h)
		want := http.Header{
			"Ratelimit-Limit":     {"3"},
			"Ratelimit-Remaining": {"2"},
			"Ratelimit-Reset":     {strconv.FormatInt(start.Unix()+2, 10)},
			"Ratelimit-Policy":    {"3;w=2, 10;w=3600"},
		}
		for k, v := range want {
			if got := h[k]; len(got) != 1 || got[0] != v[0] {
				t.Errorf("%s = %q, want %q", k, got, v)
			}
		}
	})
}

func TestErr(t *testing.T) {
	tests := []struct {
		name string
		d    Decision
		want bool // whether an error is expected
	}{
		{"allowed", Decision{Allowed: true, Limit: 1}, false},
		{"refused", Decision{Allowed: false, Limit: 1}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.d.Err()
			if !tt.want {
				if err != nil {
					t.Fatalf("Err() = %#v, want untyped nil", err)
				}
				return
			}
			pe, ok := pdserr.As(err)
			if !ok {
				t.Fatalf("Err() = %v, not a *pdserr.Error", err)
			}
			if pe.Name != pdserr.RateLimitExceeded || pe.Message != "Rate Limit Exceeded" || pe.Err != nil {
				t.Errorf("Err() = %+v", pe)
			}
			if !pdserr.Is(err, pdserr.RateLimitExceeded) {
				t.Error("pdserr.Is(RateLimitExceeded) is false")
			}
		})
	}
}

func TestNewPanics(t *testing.T) {
	tests := []struct {
		name    string
		windows []Window
	}{
		{"no windows", nil},
		{"zero limit", []Window{{Limit: 0, Period: time.Minute}}},
		{"negative limit", []Window{{Limit: -1, Period: time.Minute}}},
		{"zero period", []Window{{Limit: 1}}},
		{"negative period", []Window{{Limit: 1, Period: -time.Second}}},
		{"absurd period", []Window{{Limit: 1, Period: 1 << 62}}},
		{"one bad of two", []Window{{Limit: 1, Period: time.Minute}, {Limit: 0, Period: time.Minute}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("New did not panic")
				}
			}()
			New(tt.windows, nil)
		})
	}
}

func TestRealClock(t *testing.T) {
	l := New(createSession, nil)
	d := l.Allow("k")
	if !d.Allowed || d.Remaining != 29 {
		t.Fatalf("decision %+v", d)
	}
	if until := time.Until(d.Reset); until < 5*time.Minute || until > 5*time.Minute+10*time.Second {
		t.Errorf("Reset in %v, want between 5m and 5m10s", until)
	}
}

// TestClockGoesBackwards checks that a clock stepped back, even to before
// the limiter was created, neither panics nor forgets attempts.
func TestClockGoesBackwards(t *testing.T) {
	clock := newClock()
	l := New([]Window{{Limit: 3, Period: time.Minute}}, clock.Now)
	runSteps(t, l, clock, "k", []step{
		{time.Hour, 2, 2},
		{0, 1, 1},
		{-time.Hour, 1, 0},
		{time.Hour + time.Minute + 2*time.Second, 3, 3},
	})
	runSteps(t, l, clock, "early", []step{
		{-10 * time.Hour, 3, 3},
		{-10*time.Hour + time.Minute + 2*time.Second - 1, 1, 0},
		{-10*time.Hour + time.Minute + 2*time.Second, 3, 3},
	})
}

// TestMemoryBound sprays a million random keys through a limiter with a
// small cap: the number of tracked keys must never pass the cap.
func TestMemoryBound(t *testing.T) {
	const maxKeys = 1000
	n := 1_000_000
	if testing.Short() {
		n = 50_000
	}
	clock := newClock()
	l := New(createSession, clock.Now, WithMaxKeys(maxKeys))
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range n {
		if i%1000 == 0 {
			clock.At(time.Duration(i) * time.Millisecond)
		}
		l.Allow(strconv.FormatUint(rng.Uint64(), 36))
		if got := l.Len(); got > maxKeys {
			t.Fatalf("after %d keys Len = %d, cap %d", i+1, got, maxKeys)
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	listed := 0
	for e := l.lru.next; e != &l.lru; e = e.next {
		listed++
		if l.keys[e.key] != e {
			t.Fatalf("list entry %q not in the map", e.key)
		}
	}
	if listed != len(l.keys) {
		t.Errorf("list holds %d entries, map %d", listed, len(l.keys))
	}
}

func TestEviction(t *testing.T) {
	t.Run("default cap", func(t *testing.T) {
		for _, n := range []int{0, -1} {
			if l := New(createSession, nil, WithMaxKeys(n)); l.maxKeys != DefaultMaxKeys {
				t.Errorf("WithMaxKeys(%d): cap %d", n, l.maxKeys)
			}
		}
	})

	t.Run("least recently used goes first", func(t *testing.T) {
		clock := newClock()
		l := New([]Window{{Limit: 1, Period: time.Hour}}, clock.Now, WithMaxKeys(2))
		l.Allow("a")
		l.Allow("b")
		l.Allow("a") // refused, but counts as use
		l.Allow("c") // evicts b
		if l.Allow("a").Allowed {
			t.Error("a was evicted; want b evicted")
		}
		if !l.Allow("b").Allowed {
			t.Error("b is still limited; it should have been evicted")
		}
		if got := l.Len(); got != 2 {
			t.Errorf("Len = %d, want 2", got)
		}
	})

	t.Run("key under attack stays tracked during a spray", func(t *testing.T) {
		clock := newClock()
		l := New(createSession, clock.Now, WithMaxKeys(100))
		runSteps(t, l, clock, "victim", []step{{0, 30, 30}})
		for i := range 100_000 {
			l.Allow("spray" + strconv.Itoa(i))
			if i%50 == 0 && l.Allow("victim").Allowed {
				t.Fatalf("victim admitted after %d spray keys", i)
			}
		}
	})

	t.Run("idle keys expire without eviction", func(t *testing.T) {
		clock := newClock()
		l := New(createSession, clock.Now)
		for i := range 1000 {
			l.Allow(strconv.Itoa(i))
		}
		// The day's bucket 0 leaves at 31*2880 s.
		clock.At(89280*time.Second - 1)
		l.Allow("fresh")
		if got := l.Len(); got != 1001 {
			t.Errorf("before expiry Len = %d, want 1001", got)
		}
		clock.At(89280 * time.Second)
		l.Allow("fresh2")
		// "fresh" was used last, so it is at the front and still live.
		if got := l.Len(); got != 2 {
			t.Errorf("after expiry Len = %d, want 2", got)
		}
	})
}

// TestConcurrentOneKey races many goroutines on one key: exactly Limit of
// their attempts may be admitted. Run with -race.
func TestConcurrentOneKey(t *testing.T) {
	tests := []struct {
		name       string
		windows    []Window
		goroutines int
		each       int
		want       int
	}{
		{"createSession", createSession, 64, 20, 30},
		{"large limit", []Window{{Limit: 1000, Period: time.Minute}}, 50, 40, 1000},
		{"limit above attempts", []Window{{Limit: 5000, Period: time.Minute}}, 20, 50, 1000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newClock()
			l := New(tt.windows, clock.Now, WithMaxKeys(64))
			var allowed atomic.Int64
			var wg sync.WaitGroup
			for g := range tt.goroutines {
				wg.Go(func() {
					for i := range tt.each {
						if l.Allow("hot").Allowed {
							allowed.Add(1)
						}
						// Other keys churn the map and the list meanwhile.
						l.Allow("g" + strconv.Itoa(g) + "-" + strconv.Itoa(i))
					}
				})
			}
			wg.Wait()
			if got := allowed.Load(); got != int64(tt.want) {
				t.Errorf("%d attempts admitted, want %d", got, tt.want)
			}
		})
	}
}

func BenchmarkAllow(b *testing.B) {
	b.Run("one key", func(b *testing.B) {
		l := New(createSession, nil)
		for b.Loop() {
			l.Allow("198.51.100.7")
		}
	})
	b.Run("spray at cap", func(b *testing.B) {
		l := New(createSession, nil, WithMaxKeys(10_000))
		keys := make([]string, 100_000)
		for i := range keys {
			keys[i] = strconv.Itoa(i)
		}
		i := 0
		for b.Loop() {
			l.Allow(keys[i%len(keys)])
			i++
		}
	})
}
