// Package ratelimit limits how often a key (a client address, an account
// identifier) may do something, extracts the client address to key on, and
// recognises the operator's bypass key.
//
// # Algorithm
//
// A key is limited by several windows at once ("30 per 5 minutes and 300 per
// day", as the reference PDS limits com.atproto.server.createSession), and an
// attempt is admitted only if every window admits it. Each window is a
// sliding window of bucketed counts: the period is cut into [buckets] slices
// and the limiter keeps one counter per slice, plus one for the slice in
// progress. The alternatives were rejected because:
//
//   - A fixed window (what the reference PDS's in-memory limiter does) admits
//     twice the limit across a window boundary: 30 attempts at 4:59 and 30 at
//     5:01.
//   - GCRA and token buckets need only one timestamp per window, but they
//     bound the long-run rate rather than the count per period: after the
//     burst is spent they refill one attempt every Period/Limit, so up to
//     2*Limit-1 attempts fit in one period. "30;w=300" in RateLimit-Policy
//     would then be untrue.
//   - An exact sliding log must keep Limit timestamps per window, 2.6 KB per
//     key for 30+300 attempts, which is too much to hold for 100k keys that
//     an attacker can create at will.
//
// Bucketed counts cost a fixed ~130 bytes per window per key and never admit
// more than Limit attempts in any span of Period, because every attempt is
// remembered for at least Period (and at most Period plus one bucket). The
// price is that a refused client may wait up to Period/buckets longer than
// an exact log would make it: 10 seconds for a 5-minute window, 48 minutes
// for a day.
//
// Only admitted attempts are recorded. Whether an attempt was a failed or a
// successful login does not matter to the limiter (both count, as in the
// reference PDS); the caller chooses which calls to pass to [Limiter.Allow].
// Refused attempts are not recorded, so a client that waits until
// Decision.Reset is admitted, and hammering while refused does not push that
// time back.
package ratelimit

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"stratus/internal/pdserr"
)

const (
	// buckets is how many slices each window's period is cut into. More
	// slices make the limiter release refused clients closer to the exact
	// time, at 4 bytes per slice per window per tracked key.
	buckets = 30
	// slots is the ring size: the full slices of one period plus the slice
	// in progress, so that attempts in the oldest, partly expired slice are
	// still counted.
	slots = buckets + 1

	// DefaultMaxKeys is how many keys a Limiter tracks unless [WithMaxKeys]
	// says otherwise. With the createSession windows a tracked key costs
	// about 0.4 KB, so a full limiter holds about 40 MB.
	DefaultMaxKeys = 100_000

	// maxKeyLen bounds the memory one key can pin. Longer keys are stored as
	// a digest, so an attacker cannot make the limiter hold megabytes per
	// key by sending long identifiers.
	maxKeyLen = 64

	// maxPeriod keeps bucket arithmetic (index+slots)*width far from int64
	// overflow for any realistic uptime.
	maxPeriod = 100 * 365 * 24 * time.Hour
)

// Window is one limit on a key: at most Limit admitted attempts in any span
// of Period.
type Window struct {
	// Limit is how many attempts are admitted per Period; at least 1.
	Limit int
	// Period is the length of the sliding window; positive.
	Period time.Duration
}

// Option configures a Limiter.
type Option func(*Limiter)

// WithMaxKeys caps the number of keys a Limiter tracks; n < 1 means
// [DefaultMaxKeys].
//
// When the cap is reached the least recently used key is forgotten to make
// room. That is a trade-off: an attacker who can present more than n distinct
// keys between two attempts on a victim key resets the victim key's counts.
// The alternative, refusing keys that do not fit, would let the same spray
// lock every new client out. Forgetting costs the attacker n requests per
// reset, which other limits (per address, per identifier) should make
// expensive; size n well above the number of legitimate keys per day.
func WithMaxKeys(n int) Option {
	return func(l *Limiter) {
		if n < 1 {
			n = DefaultMaxKeys
		}
		l.maxKeys = n
	}
}

// Limiter admits or refuses attempts per key under several windows. It is
// safe for concurrent use. One mutex guards all state: the work per attempt
// is a few hundred additions, far below the cost of the requests it guards.
type Limiter struct {
	now     func() time.Time
	epoch   time.Time // bucket indexes count from here, keeping them small
	windows []window
	policy  string
	maxKeys int

	mu   sync.Mutex
	keys map[string]*entry
	// lru is the sentinel of a circular list of entries, most recently used
	// first. Its tail holds both the eviction candidate and the entries that
	// went idle longest ago, so expiry needs no scan.
	lru entry
}

// window is a Window in the units the limiter computes in.
type window struct {
	limit int
	width int64 // nanoseconds per bucket
}

// ring holds the counts of one window for one key.
type ring struct {
	newest int64 // absolute index of the newest bucket in counts
	// counts[mod(b, slots)] is the number of attempts admitted in bucket b,
	// for b in newest-buckets..newest; all other buckets are known empty.
	counts [slots]uint32
}

// entry is the state of one tracked key.
type entry struct {
	key   string
	rings []ring // one per window, in the Limiter's window order
	// idleAt is the time (nanoseconds since epoch) at which every ring will
	// be empty; from then on the entry carries no information and can go.
	idleAt     int64
	prev, next *entry
}

// New returns a Limiter that admits an attempt only when every one of
// windows admits it. now is the clock; nil means time.Now. New panics if
// windows is empty or a window has Limit < 1 or a Period that is not
// positive: windows are fixed configuration, so that is a programming error.
func New(windows []Window, now func() time.Time, opts ...Option) *Limiter {
	if len(windows) == 0 {
		panic("ratelimit: New needs at least one window")
	}
	if now == nil {
		now = time.Now
	}
	l := &Limiter{
		now:     now,
		maxKeys: DefaultMaxKeys,
		keys:    make(map[string]*entry),
	}
	policies := make([]string, 0, len(windows))
	for _, w := range windows {
		if w.Limit < 1 || uint64(w.Limit) > math.MaxUint32 {
			panic(fmt.Sprintf("ratelimit: window limit %d out of range", w.Limit))
		}
		if w.Period <= 0 || w.Period > maxPeriod {
			panic(fmt.Sprintf("ratelimit: window period %v out of range", w.Period))
		}
		// Rounding the width up makes the ring span at least one period, so
		// rounding can only make the limiter stricter, never looser.
		width := (int64(w.Period) + buckets - 1) / buckets
		l.windows = append(l.windows, window{limit: w.Limit, width: width})
		policies = append(policies, fmt.Sprintf("%d;w=%d", w.Limit, ceilSeconds(w.Period)))
	}
	l.policy = strings.Join(policies, ", ")
	for _, o := range opts {
		o(l)
	}
	l.lru.prev, l.lru.next = &l.lru, &l.lru
	l.epoch = now()
	return l
}

// Len returns the number of keys currently tracked, for metrics and tests.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.keys)
}

// Allow records one attempt for key, if every window admits it, and reports
// whether it did. The Decision describes the tightest window: when refused,
// the full window that frees up last (so a retry at Reset succeeds); when
// admitted, the window with the fewest attempts remaining.
func (l *Limiter) Allow(key string) Decision {
	key = storedKey(key)

	l.mu.Lock()
	defer l.mu.Unlock()

	// Reading the clock under the lock makes attempts reach the rings in
	// time order.
	now := l.now()

	// Nanoseconds since the limiter was created. Sub uses the monotonic
	// clock when both times carry it, so wall-clock steps do not move
	// windows.
	t := int64(now.Sub(l.epoch))
	l.expire(t)

	e := l.keys[key]
	if e == nil {
		e = l.add(key, t)
	} else {
		l.moveToFront(e)
	}

	allowed := true
	for i, w := range l.windows {
		r := &e.rings[i]
		r.advance(floorDiv(t, w.width))
		if r.total() >= w.limit {
			allowed = false
		}
	}
	if allowed {
		for i, w := range l.windows {
			r := &e.rings[i]
			// Record in the ring's newest bucket rather than the one for t:
			// they differ only if the clock went backwards, and then the
			// bucket for t may already have been reused for a later one.
			r.counts[mod(r.newest, slots)]++
			e.idleAt = max(e.idleAt, (r.newest+slots)*w.width)
		}
	}

	d := Decision{Allowed: allowed, Policy: l.policy}
	var bestReset int64
	best := false
	for i, w := range l.windows {
		r := &e.rings[i]
		remaining := max(w.limit-r.total(), 0)
		reset, ok := r.nextExpiry(w.width)
		if !ok {
			continue // empty ring; cannot be the tightest window
		}
		var better bool
		if allowed {
			better = !best || remaining < d.Remaining || (remaining == d.Remaining && reset > bestReset)
		} else {
			better = remaining == 0 && (!best || reset > bestReset)
		}
		if better {
			best = true
			d.Limit, d.Remaining, bestReset = w.limit, remaining, reset
		}
	}
	d.Reset = l.epoch.Add(time.Duration(bestReset))
	return d
}

// expire forgets entries that have gone idle, walking from the least recently
// used end. Doing a little of this on every call keeps the map small without
// a background goroutine; each entry is removed once, so the cost is
// amortised O(1). It stops at the first live entry: an idle entry behind it
// waits for a later call or for eviction, which only costs memory within the
// cap.
func (l *Limiter) expire(t int64) {
	for e := l.lru.prev; e != &l.lru && e.idleAt <= t; e = l.lru.prev {
		l.unlink(e)
		delete(l.keys, e.key)
	}
}

// add starts tracking key, evicting the least recently used key if the
// limiter is full. The evicted entry's memory is reused, so a spray of new
// keys at the cap does not allocate per key.
func (l *Limiter) add(key string, t int64) *entry {
	var e *entry
	if len(l.keys) >= l.maxKeys && l.lru.prev != &l.lru {
		e = l.lru.prev
		l.unlink(e)
		delete(l.keys, e.key)
		clear(e.rings)
		e.idleAt = 0
	} else {
		e = &entry{rings: make([]ring, len(l.windows))}
	}
	e.key = key
	for i, w := range l.windows {
		e.rings[i].newest = floorDiv(t, w.width)
	}
	l.keys[key] = e
	l.pushFront(e)
	return e
}

func (l *Limiter) unlink(e *entry) {
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = nil, nil
}

func (l *Limiter) pushFront(e *entry) {
	e.prev, e.next = &l.lru, l.lru.next
	l.lru.next.prev = e
	l.lru.next = e
}

func (l *Limiter) moveToFront(e *entry) {
	if l.lru.next != e {
		l.unlink(e)
		l.pushFront(e)
	}
}

// advance moves the ring forward to bucket c, emptying the buckets that fall
// out of the window. A c older than the newest bucket (the clock went
// backwards) leaves the ring alone, which keeps every recorded attempt.
func (r *ring) advance(c int64) {
	if c <= r.newest {
		return
	}
	if c-r.newest >= slots {
		clear(r.counts[:])
	} else {
		for b := r.newest + 1; b <= c; b++ {
			r.counts[mod(b, slots)] = 0
		}
	}
	r.newest = c
}

// total returns the attempts counted in the window.
func (r *ring) total() int {
	n := 0
	for _, c := range r.counts {
		n += int(c)
	}
	return n
}

// nextExpiry returns when (nanoseconds since epoch) the oldest counted
// attempt leaves the window, that is, when the remaining count next grows.
func (r *ring) nextExpiry(width int64) (int64, bool) {
	for b := r.newest - buckets; b <= r.newest; b++ {
		if r.counts[mod(b, slots)] > 0 {
			return (b + slots) * width, true
		}
	}
	return 0, false
}

// storedKey bounds the memory a key pins. Digests are longer than maxKeyLen,
// so a short key can never collide with a digested long one.
func storedKey(key string) string {
	if len(key) <= maxKeyLen {
		return key
	}
	sum := sha256.Sum256([]byte(key))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// floorDiv divides rounding towards minus infinity, so that times before the
// epoch (a fake clock, a clock stepped back) still map to the right bucket.
func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// mod returns a modulo m in [0, m), for bucket indexes that may be negative.
func mod(a, m int64) int64 {
	r := a % m
	if r < 0 {
		r += m
	}
	return r
}

func ceilSeconds(d time.Duration) int64 {
	return int64((d + time.Second - 1) / time.Second)
}

// Decision is the outcome of one [Limiter.Allow], with what the RateLimit-*
// response headers need, for the tightest window.
type Decision struct {
	// Allowed reports whether the attempt was admitted (and recorded).
	Allowed bool
	// Limit is the tightest window's Limit.
	Limit int
	// Remaining is how many more attempts that window admits now.
	Remaining int
	// Reset is when that window's oldest counted attempt expires, so
	// Remaining grows. When Allowed is false a retry at Reset is admitted,
	// unless other attempts on the key are admitted first.
	Reset time.Time
	// Policy lists every window in the form of the IETF RateLimit header
	// draft, e.g. "30;w=300, 300;w=86400" (window lengths in seconds,
	// rounded up).
	Policy string
}

// SetHeaders writes the RateLimit-Limit, RateLimit-Remaining,
// RateLimit-Reset and RateLimit-Policy headers. The reference PDS sends them
// in lower case; Go canonicalises header names, and HTTP header names are
// case-insensitive. The zero Decision writes nothing.
//
// RateLimit-Reset is a Unix time in seconds, not seconds from now as the
// IETF draft has it: the reference PDS sends a Unix time, and AT Protocol
// clients (indigo's xrpc client among them) parse it as one. It is rounded
// up, so a client that waits until then is not early.
func (d Decision) SetHeaders(h http.Header) {
	if d.Limit == 0 {
		return
	}
	h.Set("RateLimit-Limit", strconv.Itoa(d.Limit))
	h.Set("RateLimit-Remaining", strconv.Itoa(d.Remaining))
	h.Set("RateLimit-Reset", strconv.FormatInt(ceilUnix(d.Reset), 10))
	h.Set("RateLimit-Policy", d.Policy)
}

// Err returns a RateLimitExceeded *pdserr.Error when the attempt was refused,
// and nil otherwise. The message is the reference PDS's.
func (d Decision) Err() error {
	if d.Allowed {
		return nil
	}
	return &pdserr.Error{Name: pdserr.RateLimitExceeded, Message: "Rate Limit Exceeded"}
}

func ceilUnix(t time.Time) int64 {
	s := t.Unix()
	if t.Nanosecond() > 0 {
		s++
	}
	return s
}
