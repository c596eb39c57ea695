package sequencer_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"
	cbg "github.com/whyrusleeping/cbor-gen"

	"stratus/internal/sequencer"
	"stratus/internal/sqlite"
)

// memStore is an in-memory event log with the storage contract: events are
// visible to EventsAfter before the hub is notified, seqs are never reused.
type memStore struct {
	mu      sync.Mutex
	evs     []sequencer.Stored
	latest  int64
	payload []byte

	// onEventsAfter, if set, is called after every EventsAfter with its
	// arguments and the seq of the last event returned (0 for none).
	onEventsAfter func(after int64, last int64)
}

func newMemStore(t testing.TB) *memStore {
	ev, err := sequencer.Identity(syntax.DID("did:plc:abc"), "alice.test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return &memStore{payload: ev.Payload}
}

// add appends n events and returns the seq of the last.
func (m *memStore) add(n int) int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := 0; i < n; i++ {
		m.latest++
		m.evs = append(m.evs, sequencer.Stored{Seq: m.latest, Type: sequencer.TypeIdentity, Payload: m.payload})
	}
	return m.latest
}

// pruneThrough deletes the events up to seq.
func (m *memStore) pruneThrough(seq int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	i := 0
	for i < len(m.evs) && m.evs[i].Seq <= seq {
		i++
	}
	m.evs = append([]sequencer.Stored(nil), m.evs[i:]...)
}

func (m *memStore) EventsAfter(ctx context.Context, after int64, limit int) ([]sequencer.Stored, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	var out []sequencer.Stored
	for _, ev := range m.evs {
		if ev.Seq > after {
			out = append(out, ev)
			if len(out) == limit {
				break
			}
		}
	}
	hook := m.onEventsAfter
	m.mu.Unlock()
	if hook != nil {
		last := int64(0)
		if len(out) > 0 {
			last = out[len(out)-1].Seq
		}
		hook(after, last)
	}
	return out, nil
}

func (m *memStore) SeqBounds(ctx context.Context) (int64, int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	oldest := int64(0)
	if len(m.evs) > 0 {
		oldest = m.evs[0].Seq
	}
	return oldest, m.latest, nil
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newHub(t *testing.T, store sequencer.Store, buffer int) (*sequencer.Hub, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	h, err := sequencer.NewHub(ctx, store, quietLog(), buffer)
	if err != nil {
		t.Fatal(err)
	}
	return h, cancel
}

// received is what one Stream call delivered.
type received struct {
	mu    sync.Mutex
	seqs  []int64
	infos []string
}

// frameSeq returns the seq of a message frame, or the name of an #info one.
func frameSeq(data []byte) (int64, string, error) {
	r := bytes.NewReader(data)
	if err := cbg.ScanForLinks(r, func(cid.Cid) {}); err != nil {
		return 0, "", err
	}
	body := data[len(data)-r.Len():]
	hdr := data[:len(data)-r.Len()]
	if bytes.Contains(hdr, []byte("#info")) {
		var info comatproto.SyncSubscribeRepos_Info
		if err := info.UnmarshalCBOR(bytes.NewReader(body)); err != nil {
			return 0, "", err
		}
		return 0, info.Name, nil
	}
	var ev comatproto.SyncSubscribeRepos_Identity
	if err := ev.UnmarshalCBOR(bytes.NewReader(body)); err != nil {
		return 0, "", err
	}
	return ev.Seq, "", nil
}

func (r *received) send(ctx context.Context, data []byte) error {
	seq, info, err := frameSeq(data)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if info != "" {
		r.infos = append(r.infos, info)
	} else {
		r.seqs = append(r.seqs, seq)
	}
	return nil
}

func (r *received) snapshot() ([]int64, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]int64(nil), r.seqs...), append([]string(nil), r.infos...)
}

// stream runs Stream in the background; stop ends it and returns its error.
func stream(h *sequencer.Hub, cursor *int64, send func(context.Context, []byte) error) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Stream(ctx, cursor, sequencer.SendFunc(send)) }()
	return func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			return errors.New("Stream did not return after its context ended")
		}
	}
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func waitSeq(t *testing.T, r *received, last int64, timeout time.Duration) []int64 {
	t.Helper()
	var seqs []int64
	waitFor(t, fmt.Sprintf("seq %d", last), timeout, func() bool {
		seqs, _ = r.snapshot()
		return len(seqs) > 0 && seqs[len(seqs)-1] >= last
	})
	return seqs
}

func run(from, to int64) []int64 {
	var out []int64
	for i := from; i <= to; i++ {
		out = append(out, i)
	}
	return out
}

func ptr(n int64) *int64 { return &n }

func sameSeqs(got, want []int64) error {
	if len(got) != len(want) {
		return fmt.Errorf("got %d seqs %s, want %d %s", len(got), span(got), len(want), span(want))
	}
	for i := range got {
		if got[i] != want[i] {
			return fmt.Errorf("seq #%d is %d, want %d", i, got[i], want[i])
		}
	}
	return nil
}

func span(s []int64) string {
	if len(s) == 0 {
		return "[]"
	}
	return fmt.Sprintf("[%d..%d]", s[0], s[len(s)-1])
}

// Ensure cursors select where replay starts.
func TestHub_Cursors(t *testing.T) {
	store := newMemStore(t)
	store.add(20)
	h, _ := newHub(t, store, 0)
	for _, tc := range []struct {
		name   string
		cursor func(latest int64) *int64
		from   func(latest int64) int64 // first seq expected
	}{
		{"zero", func(int64) *int64 { return ptr(0) }, func(int64) int64 { return 1 }},
		{"middle", func(int64) *int64 { return ptr(7) }, func(int64) int64 { return 8 }},
		{"latest", func(l int64) *int64 { return ptr(l) }, func(l int64) int64 { return l + 1 }},
		{"none", func(int64) *int64 { return nil }, func(l int64) int64 { return l + 1 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, latest, _ := store.SeqBounds(context.Background())
			var r received
			cursor := tc.cursor(latest)
			stop := stream(h, cursor, r.send)
			waitFor(t, "subscription", 5*time.Second, func() bool { return h.Subscribers() == 1 })
			if cursor != nil && *cursor < latest {
				waitSeq(t, &r, latest, 5*time.Second)
			}
			last := store.add(1)
			h.Notify()
			seqs := waitSeq(t, &r, last, 5*time.Second)
			if err := stop(); !errors.Is(err, context.Canceled) {
				t.Errorf("Stream returned %v, want context.Canceled", err)
			}
			if err := sameSeqs(seqs, run(tc.from(latest), last)); err != nil {
				t.Error(err)
			}
			if h.Subscribers() != 0 {
				t.Errorf("%d subscribers after the stream ended", h.Subscribers())
			}
		})
	}
}

// Ensure a cursor past the latest seq ends the stream with ErrFutureCursor
// before anything is sent.
func TestHub_FutureCursor(t *testing.T) {
	store := newMemStore(t)
	store.add(5)
	h, _ := newHub(t, store, 0)
	var r received
	err := h.Stream(context.Background(), ptr(6), sequencer.SendFunc(r.send))
	if !errors.Is(err, sequencer.ErrFutureCursor) {
		t.Fatalf("Stream = %v, want ErrFutureCursor", err)
	}
	if seqs, infos := r.snapshot(); len(seqs)+len(infos) != 0 {
		t.Errorf("sent %v %v", seqs, infos)
	}
	if h.Subscribers() != 0 {
		t.Errorf("%d subscribers", h.Subscribers())
	}
}

// Ensure an outdated cursor gets #info OutdatedCursor, then every retained
// event from the oldest.
func TestHub_OutdatedCursor(t *testing.T) {
	store := newMemStore(t)
	store.add(100)
	store.pruneThrough(49)
	h, _ := newHub(t, store, 0)
	for _, tc := range []struct {
		cursor   int64
		outdated bool
	}{{0, true}, {10, true}, {48, true}, {49, false}, {60, false}} {
		t.Run(fmt.Sprint(tc.cursor), func(t *testing.T) {
			var r received
			stop := stream(h, ptr(tc.cursor), r.send)
			seqs := waitSeq(t, &r, 100, 5*time.Second)
			stop()
			_, infos := r.snapshot()
			if tc.outdated != (len(infos) == 1 && infos[0] == "OutdatedCursor") || len(infos) > 1 {
				t.Errorf("infos %v, want OutdatedCursor: %v", infos, tc.outdated)
			}
			if err := sameSeqs(seqs, run(max(50, tc.cursor+1), 100)); err != nil {
				t.Error(err)
			}
		})
	}
	t.Run("everything pruned", func(t *testing.T) {
		store.pruneThrough(100) // the log is empty; the latest seq is still 100
		var r received
		stop := stream(h, ptr(10), r.send)
		waitFor(t, "subscription", 5*time.Second, func() bool { return h.Subscribers() == 1 })
		time.Sleep(20 * time.Millisecond) // let the (empty) backfill run
		last := store.add(1)
		h.Notify()
		seqs := waitSeq(t, &r, last, 5*time.Second)
		stop()
		_, infos := r.snapshot()
		if len(infos) != 1 || infos[0] != "OutdatedCursor" {
			t.Errorf("cursor 10 with events 11..100 all pruned: infos %v, want [OutdatedCursor]", infos)
		}
		if err := sameSeqs(seqs, []int64{101}); err != nil {
			t.Error(err)
		}
	})
}

// Ensure subscribers replaying from 0 while events keep arriving get every
// seq once and in order: backfill over several pages, live frames dropped
// while backfilling (a small buffer and a slow start), then live.
func TestHub_HandOverUnderLoad(t *testing.T) {
	store := newMemStore(t)
	store.add(1600) // more than three pages
	h, _ := newHub(t, store, 256)

	const total = 4000
	var appended atomic.Int64
	appended.Store(1600)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for appended.Load() < total {
			appended.Store(store.add(8))
			h.Notify()
			time.Sleep(500 * time.Microsecond)
		}
	}()

	type sub struct {
		r    *received
		stop func() error
	}
	var subs []sub
	for _, at := range []int64{1600, 2000, 2600, 3200, 3800} {
		waitFor(t, fmt.Sprintf("%d events", at), 30*time.Second, func() bool { return appended.Load() >= at })
		r := &received{}
		// The first frames are slow: the live buffer overflows while the
		// backfill runs, and the missed frames must come from storage.
		var n atomic.Int64
		send := func(ctx context.Context, data []byte) error {
			if n.Add(1) <= 200 {
				time.Sleep(time.Millisecond)
			}
			return r.send(ctx, data)
		}
		subs = append(subs, sub{r, stream(h, ptr(0), send)})
	}
	<-done
	final := appended.Load()
	for i, s := range subs {
		seqs := waitSeq(t, s.r, final, 30*time.Second)
		if err := s.stop(); !errors.Is(err, context.Canceled) {
			t.Errorf("subscriber %d: Stream returned %v", i, err)
		}
		if err := sameSeqs(seqs, run(1, final)); err != nil {
			t.Errorf("subscriber %d: %v", i, err)
		}
	}
}

// Ensure a frame the live buffer could not hold during the backfill is
// delivered even when no later event arrives to reveal the gap.
func TestHub_DropAtEndOfBackfill(t *testing.T) {
	store := newMemStore(t)
	store.add(3)
	h, _ := newHub(t, store, 2)

	// While the subscriber sends its first backfilled event, events 4..7
	// are stored and broadcast: 4 and 5 fill its buffer, 6 and 7 are
	// dropped because it is not live yet. Its backfill page (1..3) was read
	// before they were stored.
	var pumped atomic.Int64
	store.mu.Lock()
	store.onEventsAfter = func(after, last int64) {
		if after >= 7 {
			pumped.Store(after) // the hub read past 7: it broadcast 4..7
		}
	}
	store.mu.Unlock()
	var r received
	var first sync.Once
	send := func(ctx context.Context, data []byte) error {
		first.Do(func() {
			store.add(4)
			for deadline := time.Now().Add(5 * time.Second); pumped.Load() < 7 && time.Now().Before(deadline); {
				h.Notify()
				time.Sleep(time.Millisecond)
			}
		})
		return r.send(ctx, data)
	}
	stop := stream(h, ptr(0), send)
	defer stop()
	deadline := time.Now().Add(3 * time.Second)
	for {
		seqs, _ := r.snapshot()
		if len(seqs) > 0 && seqs[len(seqs)-1] == 7 {
			if err := sameSeqs(seqs, run(1, 7)); err != nil {
				t.Error(err)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("got %v; events 6 and 7, dropped from the live buffer during the backfill, never arrive until another event is written", seqs)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Ensure a subscriber that stops consuming is cut off with
// ErrConsumerTooSlow, without holding up the others.
func TestHub_SlowConsumer(t *testing.T) {
	store := newMemStore(t)
	h, _ := newHub(t, store, 4)

	stuck := make(chan struct{})
	var blocked atomic.Bool
	stalledSend := func(ctx context.Context, data []byte) error {
		blocked.Store(true)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-stuck:
			return nil
		case <-time.After(300 * time.Millisecond): // the transport's write timeout
			return errors.New("write timeout")
		}
	}
	defer close(stuck)
	stalledDone := make(chan error, 1)
	go func() { stalledDone <- h.Stream(context.Background(), nil, sequencer.SendFunc(stalledSend)) }()

	var good received
	stopGood := stream(h, nil, good.send)
	waitFor(t, "two subscribers", 5*time.Second, func() bool { return h.Subscribers() == 2 })

	// One event blocks the stalled subscriber in send; the next four fill
	// its buffer, the one after overflows it.
	last := int64(0)
	for i := 0; i < 30; i++ {
		last = store.add(1)
		h.Notify()
		time.Sleep(time.Millisecond)
	}
	select {
	case err := <-stalledDone:
		if !errors.Is(err, sequencer.ErrConsumerTooSlow) {
			t.Errorf("stalled Stream = %v, want ErrConsumerTooSlow", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("stalled subscriber not cut off (blocked in send: %v)", blocked.Load())
	}
	seqs := waitSeq(t, &good, last, 5*time.Second)
	if err := sameSeqs(seqs, run(1, last)); err != nil {
		t.Errorf("good subscriber: %v", err)
	}
	if n := h.Subscribers(); n != 1 {
		t.Errorf("%d subscribers, want 1", n)
	}
	stopGood()
}

// Ensure subscriptions end when the hub's context ends.
func TestHub_Stop(t *testing.T) {
	store := newMemStore(t)
	h, cancel := newHub(t, store, 0)
	var r received
	done := make(chan error, 1)
	go func() { done <- h.Stream(context.Background(), ptr(0), sequencer.SendFunc(r.send)) }()
	waitFor(t, "subscription", 5*time.Second, func() bool { return h.Subscribers() == 1 })
	cancel()
	select {
	case err := <-done:
		if err == nil {
			t.Errorf("Stream returned nil")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Stream still running after the hub stopped")
	}
}

// Ensure the hub also finds events written without Notify (by another
// process), through its periodic poll.
func TestHub_PollsWithoutNotify(t *testing.T) {
	store := newMemStore(t)
	h, _ := newHub(t, store, 0)
	var r received
	stop := stream(h, nil, r.send)
	defer stop()
	waitFor(t, "subscription", 5*time.Second, func() bool { return h.Subscribers() == 1 })
	last := store.add(3)
	if err := sameSeqs(waitSeq(t, &r, last, 5*time.Second), run(1, 3)); err != nil {
		t.Error(err)
	}
}

// Ensure the SQLite event store keeps seqs across pruning (even of every
// event) and that the hub replays what is retained, with OutdatedCursor
// for older cursors.
func TestEventStore_PruneAndReplay(t *testing.T) {
	ctx := context.Background()
	db, err := sqlite.OpenWith(ctx, filepath.Join(t.TempDir(), "pds.sqlite"), sqlite.Options{RelaxedSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	did := syntax.DID("did:plc:abc")
	ev, err := sequencer.Identity(did, "alice.test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	batch := func(n int) []sequencer.Event {
		evs := make([]sequencer.Event, n)
		for i := range evs {
			evs[i] = ev
		}
		return evs
	}
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	db.Now = func() time.Time { return base }
	old, err := db.Accounts().AppendEvents(ctx, did, batch(2500)) // more than two prune batches
	if err != nil {
		t.Fatal(err)
	}
	db.Now = func() time.Time { return base.Add(time.Hour) }
	kept, err := db.Accounts().AppendEvents(ctx, did, batch(5))
	if err != nil {
		t.Fatal(err)
	}
	if old[0] != 1 || kept[4] != 2505 {
		t.Fatalf("seqs %d.. and ..%d", old[0], kept[4])
	}
	store := db.Events()
	n, err := store.PruneBefore(ctx, base.Add(time.Minute))
	if err != nil || n != 2500 {
		t.Fatalf("PruneBefore = %d, %v; want 2500", n, err)
	}
	oldest, latest, err := store.SeqBounds(ctx)
	if err != nil || oldest != 2501 || latest != 2505 {
		t.Fatalf("SeqBounds = %d, %d, %v; want 2501, 2505", oldest, latest, err)
	}
	if n, err := store.PruneBefore(ctx, base.Add(time.Minute)); err != nil || n != 0 {
		t.Fatalf("second PruneBefore = %d, %v", n, err)
	}

	h, _ := newHub(t, store, 0)
	db.OnEvents(h.Offer)
	for _, tc := range []struct {
		cursor   int64
		outdated bool
	}{{0, true}, {100, true}, {2499, true}, {2500, false}, {2503, false}} {
		var r received
		stop := stream(h, ptr(tc.cursor), r.send)
		seqs := waitSeq(t, &r, 2505, 5*time.Second)
		stop()
		_, infos := r.snapshot()
		if tc.outdated != (len(infos) == 1) {
			t.Errorf("cursor %d: infos %v", tc.cursor, infos)
		}
		if err := sameSeqs(seqs, run(max(2501, tc.cursor+1), 2505)); err != nil {
			t.Errorf("cursor %d: %v", tc.cursor, err)
		}
	}

	// Prune everything: the next seq is still the next one, live and
	// from a cursor.
	if n, err := store.PruneBefore(ctx, base.Add(2*time.Hour)); err != nil || n != 5 {
		t.Fatalf("PruneBefore(all) = %d, %v", n, err)
	}
	if oldest, latest, err := store.SeqBounds(ctx); err != nil || oldest != 0 || latest != 2505 {
		t.Fatalf("SeqBounds after pruning everything = %d, %d, %v; want 0, 2505", oldest, latest, err)
	}
	var r received
	stop := stream(h, ptr(2505), r.send)
	defer stop()
	waitFor(t, "subscription", 5*time.Second, func() bool { return h.Subscribers() == 1 })
	seqs, err := db.Accounts().AppendEvents(ctx, did, batch(1))
	if err != nil || seqs[0] != 2506 {
		t.Fatalf("append after pruning everything: %v, %v; want seq 2506", seqs, err)
	}
	if err := sameSeqs(waitSeq(t, &r, 2506, 5*time.Second), []int64{2506}); err != nil {
		t.Error(err)
	}
}

// Ensure a subscriber that still reads, but too slowly, ends with
// ErrConsumerTooSlow between two sends (so the transport can send the
// error frame) rather than with a cancelled send.
func TestHub_SlowReaderGetsConsumerTooSlow(t *testing.T) {
	store := newMemStore(t)
	h, _ := newHub(t, store, 4)
	var cancelled atomic.Bool
	slowSend := func(ctx context.Context, data []byte) error {
		select {
		case <-ctx.Done():
			cancelled.Store(true)
			return ctx.Err()
		case <-time.After(20 * time.Millisecond): // a slow but live reader
			return nil
		}
	}
	done := make(chan error, 1)
	go func() { done <- h.Stream(context.Background(), nil, sequencer.SendFunc(slowSend)) }()
	waitFor(t, "a subscriber", 5*time.Second, func() bool { return h.Subscribers() == 1 })
	for i := 0; i < 40; i++ {
		store.add(1)
		h.Notify()
		time.Sleep(time.Millisecond)
	}
	select {
	case err := <-done:
		if !errors.Is(err, sequencer.ErrConsumerTooSlow) {
			t.Fatalf("Stream = %v, want ErrConsumerTooSlow", err)
		}
		if cancelled.Load() {
			t.Fatal("a send was cancelled: the error frame could not be delivered")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("slow reader not cut off")
	}
}

// Ensure events stored while nobody is subscribed (which the hub no longer
// reads) are not sent to a later subscriber without a cursor: it gets only
// what comes after it joined.
func TestHub_NoCursorAfterQuietSpell(t *testing.T) {
	store := newMemStore(t)
	h, _ := newHub(t, store, 0)
	for range 3 {
		store.add(5)
		h.Notify()
		time.Sleep(10 * time.Millisecond)
	}
	var r received
	stop := stream(h, nil, r.send)
	defer stop()
	waitFor(t, "subscription", 5*time.Second, func() bool { return h.Subscribers() == 1 })
	last := store.add(2)
	h.Notify()
	if err := sameSeqs(waitSeq(t, &r, last, 5*time.Second), run(last-1, last)); err != nil {
		t.Error(err)
	}
}

// directSink is a DirectSink whose direct writes are refused or left
// pending at random, as a socket that is sometimes busy or full would.
type directSink struct {
	r       *received
	rnd     *rand.Rand
	mu      sync.Mutex // guards rnd and held
	held    [][]byte   // frames taken directly but not yet written
	direct  atomic.Int64
	pending atomic.Int64
}

func (d *directSink) Send(ctx context.Context, data []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.flushHeld(ctx); err != nil {
		return err
	}
	return d.r.send(ctx, data)
}

func (d *directSink) flushHeld(ctx context.Context) error {
	for _, f := range d.held {
		if err := d.r.send(ctx, f); err != nil {
			return err
		}
	}
	d.held = nil
	return nil
}

func (d *directSink) Flush(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.flushHeld(ctx)
}

func (d *directSink) TrySend(frames [][]byte) (bool, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch d.rnd.IntN(3) {
	case 0:
		return false, false // busy: the frames go through the queue
	case 1:
		d.held = append(d.held, frames...) // the socket was full
		d.pending.Add(1)
		return true, true
	}
	if err := d.flushHeld(context.Background()); err != nil {
		return false, false
	}
	for _, f := range frames {
		d.r.send(context.Background(), f)
	}
	d.direct.Add(1)
	return true, false
}

// Ensure frames written by the hub itself, refused, or left pending, mixed
// with frames sent by the subscriber's goroutine, arrive exactly once and
// in order, for subscribers joining live and from a cursor under load.
func TestHub_DirectSendsKeepOrder(t *testing.T) {
	store := newMemStore(t)
	store.add(700)
	h, _ := newHub(t, store, 0)
	const total = 3000
	var appended atomic.Int64
	appended.Store(700)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for appended.Load() < total {
			appended.Store(store.add(3))
			h.Notify()
			time.Sleep(300 * time.Microsecond)
		}
	}()
	type sub struct {
		d      *directSink
		from   int64
		cancel context.CancelFunc
		err    chan error
	}
	var subs []sub
	for i, cursor := range []*int64{ptr(0), nil, ptr(500), nil, ptr(0)} {
		d := &directSink{r: &received{}, rnd: rand.New(rand.NewPCG(uint64(i), 7))}
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		from := int64(1)
		if cursor != nil {
			from = *cursor + 1
		}
		go func() { errc <- h.Stream(ctx, cursor, d) }()
		if cursor == nil {
			waitFor(t, "subscription", 5*time.Second, func() bool { return h.Subscribers() == len(subs)+1 })
			d.mu.Lock()
			from = 0 // known once the first frame arrives
			d.mu.Unlock()
		}
		subs = append(subs, sub{d, from, cancel, errc})
		time.Sleep(50 * time.Millisecond)
	}
	<-done
	final := appended.Load()
	for i, s := range subs {
		seqs := waitSeq(t, s.d.r, final, 30*time.Second)
		s.cancel()
		if err := <-s.err; !errors.Is(err, context.Canceled) {
			t.Errorf("subscriber %d: Stream returned %v", i, err)
		}
		from := s.from
		if from == 0 {
			from = seqs[0]
		}
		if err := sameSeqs(seqs, run(from, final)); err != nil {
			t.Errorf("subscriber %d: %v", i, err)
		}
	}
	var direct, pending int64
	for _, s := range subs {
		direct += s.d.direct.Load()
		pending += s.d.pending.Load()
	}
	if direct == 0 || pending == 0 {
		t.Errorf("direct writes %d, pending %d: the test did not exercise the direct path", direct, pending)
	}
}

// Ensure offered events are used only when they continue exactly from the
// last event the hub has: events written by another process (in storage,
// never offered) and offers that arrive out of order or repeat still reach
// every subscriber once and in order, read from storage once by the hub
// (not by each subscriber filling its own gap); a contiguous offer is used
// without reading storage.
func TestHub_OfferedEvents(t *testing.T) {
	const subs = 4
	store := newMemStore(t)
	var reads atomic.Int32
	store.onEventsAfter = func(after, last int64) { reads.Add(1) }
	h, _ := newHub(t, store, 0)
	rs := make([]*received, subs)
	for i := range rs {
		rs[i] = &received{}
		stop := stream(h, nil, rs[i].send)
		defer stop()
	}
	waitFor(t, "subscribers", 5*time.Second, func() bool { return h.Subscribers() == subs })
	offer := func(from, to int64) {
		var evs []sequencer.Stored
		for seq := from; seq <= to; seq++ {
			evs = append(evs, sequencer.Stored{Seq: seq, Type: sequencer.TypeIdentity, Payload: store.payload})
		}
		h.Offer(evs)
	}
	waitAll := func(last int64) {
		for _, r := range rs {
			waitSeq(t, r, last, 5*time.Second)
		}
	}

	// Contiguous: no storage read.
	store.add(3)
	before := reads.Load()
	offer(1, 3)
	waitAll(3)
	if n := reads.Load() - before; n != 0 {
		t.Errorf("contiguous offer: storage read %d times, want 0", n)
	}

	// Seqs 4–5 written by another process, 6 offered: a gap, so the hub
	// reads storage.
	store.add(3)
	before = reads.Load()
	offer(6, 6)
	waitAll(6)
	if n := reads.Load() - before; n != 1 {
		t.Errorf("offer after a gap: storage read %d times, want 1 (by the hub)", n)
	}

	// Offers out of order and repeated.
	store.add(4)
	offer(9, 10)
	offer(7, 8)
	offer(7, 10)
	waitAll(10)

	time.Sleep(50 * time.Millisecond) // anything extra would show now
	for i, r := range rs {
		seqs, _ := r.snapshot()
		if err := sameSeqs(seqs, run(1, 10)); err != nil {
			t.Errorf("subscriber %d: %v", i, err)
		}
	}
}

// Ensure events offered while nobody is subscribed do not wake the hub,
// and a subscriber without a cursor that arrives afterwards gets the
// events after them, not them.
func TestHub_OfferWithoutSubscribers(t *testing.T) {
	store := newMemStore(t)
	var reads atomic.Int32
	store.onEventsAfter = func(after, last int64) { reads.Add(1) }
	h, _ := newHub(t, store, 0)
	for seq := int64(1); seq <= 3; seq++ {
		store.add(1)
		h.Offer([]sequencer.Stored{{Seq: seq, Type: sequencer.TypeIdentity, Payload: store.payload}})
	}
	time.Sleep(20 * time.Millisecond)
	if n := reads.Load(); n != 0 {
		t.Errorf("storage read %d times with nobody subscribed", n)
	}
	var r received
	stop := stream(h, nil, r.send)
	defer stop()
	waitFor(t, "a subscriber", 5*time.Second, func() bool { return h.Subscribers() == 1 })
	store.add(1)
	h.Offer([]sequencer.Stored{{Seq: 4, Type: sequencer.TypeIdentity, Payload: store.payload}})
	waitSeq(t, &r, 4, 5*time.Second)
	time.Sleep(20 * time.Millisecond)
	if seqs, _ := r.snapshot(); !slices.Equal(seqs, []int64{4}) {
		t.Errorf("got seqs %v, want [4]", seqs)
	}
}
