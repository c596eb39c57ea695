package sequencer

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Store reads the durable event log.
type Store interface {
	// EventsAfter returns up to limit events with seq > after, in order.
	EventsAfter(ctx context.Context, after int64, limit int) ([]Stored, error)
	// SeqBounds returns the oldest retained seq (0 when the log is empty)
	// and the latest seq ever assigned (0 when none was).
	SeqBounds(ctx context.Context) (oldest, latest int64, err error)
}

// Errors that end a subscription; the transport answers each with an
// error frame.
var (
	ErrFutureCursor    = errors.New("cursor is in the future")
	ErrConsumerTooSlow = errors.New("consumer too slow")
)

// PageSize is how many events a backfill reads from storage at a time.
const PageSize = 500

// DefaultBuffer is the number of live frames a subscriber may fall behind
// before it is disconnected.
const DefaultBuffer = 1000

// maxBatch bounds how many waiting frames a subscriber sends before
// flushing them, so one flush never holds back an unbounded amount.
const maxBatch = 128

// Sink receives one subscriber's frames. Send may hold frames back; Flush
// sends everything held. The hub sends every frame already waiting for a
// subscriber before it flushes, so frames that queued up while the
// subscriber was busy leave together, with one system call instead of
// one each: under load, fan-out cost per event falls as it is needed most.
type Sink interface {
	Send(ctx context.Context, data []byte) error
	Flush(ctx context.Context) error
}

// SendFunc is a Sink that sends each frame at once.
type SendFunc func(ctx context.Context, data []byte) error

// Send calls f.
func (f SendFunc) Send(ctx context.Context, data []byte) error { return f(ctx, data) }

// Flush does nothing: every frame has been sent.
func (SendFunc) Flush(context.Context) error { return nil }

// DirectSink is a Sink that can also take frames from the hub's own
// goroutine, without blocking. While a subscriber keeps up, the hub writes
// its frames itself, so a broadcast does not wake a goroutine per
// subscriber: with a hundred subscribers those wake-ups, not the writes,
// were what delayed everything else on the machine.
type DirectSink interface {
	Sink
	// TrySend takes frames if it can without waiting. accepted false
	// means nothing was taken. pending true means some bytes are held
	// back (the peer's socket was full): the subscriber's own goroutine
	// must Flush them.
	TrySend(frames [][]byte) (accepted, pending bool)
}

// frame is an encoded event ready to send.
type frame struct {
	seq  int64
	data []byte
}

// Hub fans events out to subscribers. One goroutine reads new events from
// storage when notified (and once a second, to see events written by other
// processes), encodes each once, and offers it to every subscriber without
// ever blocking on one.
type Hub struct {
	store  Store
	log    *slog.Logger
	buffer int
	notify chan struct{}
	ctx    context.Context // ends every subscription when the hub stops

	// done is closed when the hub's goroutine has stopped.
	done chan struct{}

	mu sync.Mutex
	// subs in the order they subscribed; a broadcast serves them in
	// turns (see serve), starting at next.
	subs []*subscriber
	next int
	last int64 // seq of the last event read from storage
	// pending holds the frames read but not yet offered to every
	// subscriber, in seq order.
	pending []frame
	datas   [][]byte // scratch for direct writes, reused

	// inbox holds events this process has just committed (see Offer),
	// so that the hub need not read them back from storage. Its own lock,
	// because committers must never wait for a broadcast.
	inMu  sync.Mutex
	inbox []Stored
	// nsubs mirrors len(subs) for Offer, which does not take mu.
	nsubs atomic.Int32
	// stale means events may have been stored since last while nobody
	// was subscribed; the next subscriber reads the latest seq first.
	stale atomic.Bool
}

type subscriber struct {
	// direct is the subscriber's sink when the hub may write to it
	// itself (nil otherwise).
	direct DirectSink
	// sendMu is held by whoever sends to the subscriber: its goroutine
	// for a batch, or the hub for a direct write.
	sendMu sync.Mutex
	// sent is the seq of the last frame handed to the sink.
	sent atomic.Int64
	ch   chan frame
	live atomic.Bool // false while backfilling: overflow is then refilled from storage
	// dropped records, under Hub.mu, that a frame was dropped while not live.
	dropped bool
	// offered is, under Hub.mu, the seq of the last frame offered to
	// the subscriber by a broadcast (or its start).
	offered int64
	slow    chan struct{}
	once    sync.Once
	cancel  context.CancelFunc
}

// slowGrace is how long a subscriber flagged as too slow may stay blocked
// in a send before the send is cancelled.
const slowGrace = 2 * time.Second

// markSlow flags a subscriber that fell a whole buffer behind. A stream
// that is still reading notices between two sends and ends with
// ErrConsumerTooSlow, so the transport can still send the error frame; one
// blocked in a send (a peer that reads nothing) has it cancelled after
// slowGrace.
func (s *subscriber) markSlow() {
	s.once.Do(func() {
		close(s.slow)
		time.AfterFunc(slowGrace, s.cancel)
	})
}

// NewHub starts a hub that broadcasts events after the latest stored one.
// It runs until ctx ends. buffer ≤ 0 means DefaultBuffer.
func NewHub(ctx context.Context, store Store, log *slog.Logger, buffer int) (*Hub, error) {
	if buffer <= 0 {
		buffer = DefaultBuffer
	}
	if log == nil {
		log = slog.Default()
	}
	_, latest, err := store.SeqBounds(ctx)
	if err != nil {
		return nil, fmt.Errorf("read latest seq: %w", err)
	}
	h := &Hub{store: store, log: log, buffer: buffer, notify: make(chan struct{}, 1), ctx: ctx, last: latest}
	h.done = make(chan struct{})
	go func() {
		defer close(h.done)
		h.run(ctx)
	}()
	return h, nil
}

// Notify tells the hub that new events were stored. It never blocks.
func (h *Hub) Notify() {
	select {
	case h.notify <- struct{}{}:
	default:
	}
}

// maxInbox bounds the events Offer holds: past it they are dropped, and
// the hub reads them from storage instead.
const maxInbox = 4096

// Offer hands the hub events that have just been committed, in seq order,
// and wakes it if anyone is subscribed. The hub uses them instead of reading storage when they
// continue exactly from the last event it has; anything else (events of
// another process, calls out of order) sends it back to storage, which is
// always right. It never blocks on a broadcast.
func (h *Hub) Offer(evs []Stored) {
	if h.nsubs.Load() == 0 {
		// Nobody to wake the hub for (a wake-up per commit costs the
		// writer more than anything else here): the next subscriber
		// reads the latest seq instead. See subscribe for the order.
		h.stale.Store(true)
		if h.nsubs.Load() == 0 {
			return
		}
	} else {
		h.inMu.Lock()
		if len(h.inbox)+len(evs) <= maxInbox {
			h.inbox = append(h.inbox, evs...)
		}
		h.inMu.Unlock()
	}
	h.Notify()
}

// takeInbox returns the offered events if they continue exactly from
// after, in order and without a gap, and empties the inbox.
func (h *Hub) takeInbox(after int64) []Stored {
	h.inMu.Lock()
	evs := h.inbox
	h.inbox = nil
	h.inMu.Unlock()
	slices.SortFunc(evs, func(a, b Stored) int { return cmp.Compare(a.Seq, b.Seq) })
	i := 0
	for i < len(evs) && evs[i].Seq <= after {
		i++
	}
	evs = evs[i:]
	for j, ev := range evs {
		if ev.Seq != after+1+int64(j) {
			return nil
		}
	}
	return evs
}

// Subscribers returns the number of connected subscribers.
func (h *Hub) Subscribers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}

// Each subscriber is served at most once per pause that grows with the
// number of subscribers: events committed within it go out together, so
// the subscriber wakes once and they are written with one system call.
// The cost it divides is paid per subscriber, so one subscriber waits at
// most coalescePerSub, and a hundred up to maxCoalesce. An event after a
// quiet spell goes out at once.
//
// Beyond cohortSize subscribers, they are served in turns of about
// cohortSize, one turn per pause/turns: the same work per event, spread
// over the pause instead of in one burst (after a quiet spell the first
// turn goes at once, the others follow within the pause). A burst that
// takes every core for a millisecond delays whatever else the machine
// runs, such as the writes that produce the events; a small turn fits
// beside them.
const (
	coalescePerSub = 50 * time.Microsecond
	maxCoalesce    = 5 * time.Millisecond
	cohortSize     = 16
)

// coalesceFor is the pause between two services of one subscriber with n
// subscribers.
func coalesceFor(n int) time.Duration {
	return min(time.Duration(n)*coalescePerSub, maxCoalesce)
}

// turnsFor is the number of turns that serve n subscribers once each.
func turnsFor(n int) int {
	return max(1, (n+cohortSize-1)/cohortSize)
}

// Done is closed once the hub has stopped (its context ended) and no
// longer reads storage, so the storage may be closed.
func (h *Hub) Done() <-chan struct{} { return h.done }

func (h *Hub) run(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var last time.Time // the last turn
	owed := false      // some subscriber has frames not yet offered
	for ctx.Err() == nil {
		read := false
		if owed {
			// Keep taking turns; read storage again only when told.
			select {
			case <-h.notify:
				read = true
			default:
			}
		} else {
			select {
			case <-ctx.Done():
				return
			case <-h.notify:
			case <-t.C:
			}
			read = true
		}
		if wait := h.turnPause() - time.Since(last); wait > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
		last = time.Now()
		if read {
			if err := h.pump(ctx); err != nil && ctx.Err() == nil {
				h.log.Error("firehose: read new events", "err", err)
			}
		}
		owed = h.serve()
	}
}

// turnPause is the pause between two turns.
func (h *Hub) turnPause() time.Duration {
	n := h.Subscribers()
	return coalesceFor(n) / time.Duration(turnsFor(n))
}

// pump reads every stored event after h.last into h.pending: the
// offered events when they continue from h.last, storage otherwise.
func (h *Hub) pump(ctx context.Context) error {
	h.mu.Lock()
	if len(h.subs) == 0 {
		// Nobody to send to: skip reading and encoding the events, and
		// even the latest seq, which the next subscriber reads instead.
		h.stale.Store(true)
		h.mu.Unlock()
		return nil
	}
	h.mu.Unlock()
	if evs := h.takeInbox(h.lastSeq()); len(evs) > 0 {
		h.add(evs)
		return nil
	}
	for {
		evs, err := h.store.EventsAfter(ctx, h.lastSeq(), PageSize)
		if err != nil {
			return err
		}
		h.add(evs)
		if len(evs) < PageSize {
			return nil
		}
	}
}

// add encodes evs and appends them to h.pending.
func (h *Hub) add(evs []Stored) {
	if len(evs) == 0 {
		return
	}
	frames := make([]frame, 0, len(evs))
	for _, ev := range evs {
		data, err := Frame(ev)
		if err != nil {
			// A stored event that cannot be encoded is skipped rather
			// than blocking the stream for everyone; it is logged.
			h.log.Error("firehose: encode event", "seq", ev.Seq, "err", err)
			continue
		}
		frames = append(frames, frame{seq: ev.Seq, data: data})
	}
	h.mu.Lock()
	h.pending = append(h.pending, frames...)
	h.last = evs[len(evs)-1].Seq
	h.mu.Unlock()
}

func (h *Hub) lastSeq() int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.last
}

// serve takes one turn: it offers the frames read so far to the next
// subscribers (one turn's worth, in subscription order, skipping those
// with nothing new), then forgets frames every subscriber has been
// offered. Each subscriber gets all it is owed at once, so it usually
// finds the whole batch waiting when it wakes. It reports whether some
// subscriber is still owed frames.
func (h *Hub) serve() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := len(h.subs)
	if n == 0 {
		h.pending = nil
		return false
	}
	per := (n + turnsFor(n) - 1) / turnsFor(n)
	for i, served := 0, 0; i < n && served < per; i++ {
		if h.next >= n {
			h.next = 0
		}
		s := h.subs[h.next]
		h.next++
		if s.offered < h.last {
			h.offer(s)
			served++
		}
	}
	low := h.last
	for _, s := range h.subs {
		low = min(low, s.offered)
	}
	drop := 0
	for drop < len(h.pending) && h.pending[drop].seq <= low {
		drop++
	}
	if drop == len(h.pending) {
		clear(h.pending)
		h.pending = h.pending[:0]
	} else if drop > 0 {
		h.pending = slices.Delete(h.pending, 0, drop)
	}
	return low < h.last
}

// offer hands s the pending frames after the last one it was offered.
// Callers hold h.mu.
func (h *Hub) offer(s *subscriber) {
	i := 0
	for i < len(h.pending) && h.pending[i].seq <= s.offered {
		i++
	}
	frames := h.pending[i:]
	s.offered = h.last
	if len(frames) == 0 || h.sendDirect(s, frames, &h.datas) {
		return
	}
	for _, f := range frames {
		select {
		case s.ch <- f:
			continue
		default:
		}
		if s.live.Load() {
			s.markSlow()
		} else {
			// While backfilling, a full buffer only means the
			// subscriber will read the missed events from storage.
			s.dropped = true
		}
		break
	}
}

// sendDirect writes frames to a live subscriber from the hub's goroutine
// when that is safe and does not block: nothing is queued for it, its
// goroutine is not sending, and the frames continue exactly from the last
// one it was sent. It reports whether the frames were taken.
func (h *Hub) sendDirect(s *subscriber, frames []frame, datas *[][]byte) bool {
	if s.direct == nil || !s.live.Load() || len(s.ch) > 0 || !s.sendMu.TryLock() {
		return false
	}
	defer s.sendMu.Unlock()
	sent := s.sent.Load()
	i := 0
	for i < len(frames) && frames[i].seq <= sent {
		i++
	}
	if i == len(frames) {
		return true // all sent already
	}
	// Queued frames and a frame its goroutine has taken but not yet sent
	// both show as a gap here: those go the usual way, in order.
	if len(s.ch) > 0 || frames[i].seq != sent+1 {
		return false
	}
	*datas = (*datas)[:0]
	for _, f := range frames[i:] {
		*datas = append(*datas, f.data)
	}
	accepted, pending := s.direct.TrySend(*datas)
	if !accepted {
		return false
	}
	s.sent.Store(frames[len(frames)-1].seq)
	if pending {
		// Wake the goroutine to flush what the socket did not take; a
		// frame with seq 0 is never sent, only flushed after.
		select {
		case s.ch <- frame{}:
		default:
			s.markSlow()
		}
	}
	return true
}

func (h *Hub) subscribe(ctx context.Context, cancel context.CancelFunc, sink Sink) (*subscriber, int64, error) {
	s := &subscriber{ch: make(chan frame, h.buffer), slow: make(chan struct{}), cancel: cancel}
	if d, ok := sink.(DirectSink); ok {
		s.direct = d
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	// Counted before stale is read: an Offer that finds nobody subscribed
	// marks the hub stale and then counts again, so either it sees this
	// subscriber and wakes the hub, or this sees stale and reads the
	// latest seq, which includes the offered events.
	h.nsubs.Store(int32(len(h.subs) + 1))
	if h.stale.Load() {
		// Under the lock, so no broadcast can slip in between.
		_, latest, err := h.store.SeqBounds(ctx)
		if err != nil {
			h.nsubs.Store(int32(len(h.subs)))
			return nil, 0, fmt.Errorf("read latest seq: %w", err)
		}
		h.last = max(h.last, latest)
		h.stale.Store(false)
	}
	s.offered = h.last
	h.subs = append(h.subs, s)
	return s, h.last, nil
}

func (h *Hub) unsubscribe(s *subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if i := slices.Index(h.subs, s); i >= 0 {
		h.subs = slices.Delete(h.subs, i, i+1)
		h.nsubs.Store(int32(len(h.subs)))
		if i < h.next {
			h.next--
		}
	}
}

// Stream sends events to one subscriber until ctx ends or the subscriber
// fails. Without a cursor it starts with the next live event. With one it
// first sends every retained event after the cursor, read from storage a
// page at a time, then continues live with no gap and no duplicate: the
// subscription is registered before the backfill starts, and any event
// the live buffer could not hold is read from storage. A cursor older than
// the retained events gets an #info OutdatedCursor frame first; a cursor
// past the latest seq gets ErrFutureCursor. send must not block without
// bound (the transport applies a write timeout); a subscriber that falls
// more than the buffer behind live events gets ErrConsumerTooSlow.
func (h *Hub) Stream(ctx context.Context, cursor *int64, sink Sink) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(h.ctx, cancel) // the server is shutting down
	defer stop()
	sub, start, err := h.subscribe(ctx, cancel, sink)
	if err != nil {
		return err
	}
	defer h.unsubscribe(sub)

	last := start
	if cursor != nil {
		oldest, latest, err := h.store.SeqBounds(ctx)
		if err != nil {
			return fmt.Errorf("read seq bounds: %w", err)
		}
		if *cursor > latest {
			return ErrFutureCursor
		}
		last = *cursor
		first := oldest // the first seq that can still be sent
		if first == 0 {
			first = latest + 1
		}
		if *cursor < first-1 {
			info, err := InfoFrame("OutdatedCursor", "Requested cursor exceeded limit. Possibly missing events")
			if err != nil {
				return err
			}
			if err := sink.Send(ctx, info); err != nil {
				return h.sendErr(sub, err)
			}
			last = first - 1
		}
		for {
			if last, err = h.backfill(ctx, sub, last, 0, sink); err != nil {
				return err
			}
			// Before the subscriber is live: the hub writes to it
			// directly only from the frame after this one.
			sub.sent.Store(last)
			if h.goLive(sub) {
				break
			}
		}
	}
	sub.sent.Store(last)
	sub.live.Store(true)
	for {
		select {
		case <-ctx.Done():
			select {
			case <-sub.slow:
				return ErrConsumerTooSlow
			default:
			}
			return ctx.Err()
		case <-sub.slow:
			return ErrConsumerTooSlow
		case f := <-sub.ch:
			sub.sendMu.Lock()
			err := h.sendBatch(ctx, sub, f, sink)
			sub.sendMu.Unlock()
			if err != nil {
				return err
			}
		}
	}
}

// sendBatch sends f and every frame already waiting after it, then
// flushes. Callers hold sub.sendMu.
func (h *Hub) sendBatch(ctx context.Context, sub *subscriber, f frame, sink Sink) error {
	if err := h.deliver(ctx, sub, f, sink); err != nil {
		return err
	}
	for range maxBatch - 1 {
		select {
		case f := <-sub.ch:
			if err := h.deliver(ctx, sub, f, sink); err != nil {
				return err
			}
			continue
		default:
		}
		break
	}
	if err := sink.Flush(ctx); err != nil {
		return h.sendErr(sub, err)
	}
	return nil
}

// deliver sends one live frame unless it was already sent, first reading
// from storage any events dropped since the last one sent.
func (h *Hub) deliver(ctx context.Context, sub *subscriber, f frame, sink Sink) error {
	last := sub.sent.Load()
	if f.seq <= last {
		return nil
	}
	if f.seq > last+1 {
		// Live events were dropped while this subscriber was
		// backfilling; storage has them.
		got, err := h.backfill(ctx, sub, last, f.seq-1, sink)
		sub.sent.Store(got)
		if err != nil {
			return err
		}
	}
	if err := sink.Send(ctx, f.data); err != nil {
		return h.sendErr(sub, err)
	}
	sub.sent.Store(f.seq)
	return nil
}

// goLive marks sub live, unless frames were dropped for it since the last
// call: the caller then backfills again, since they are in storage.
func (h *Hub) goLive(s *subscriber) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if s.dropped {
		s.dropped = false
		return false
	}
	s.live.Store(true)
	return true
}

// backfill sends stored events after `after` (up to `until` when it is
// positive), flushing after every page, and returns the last seq sent.
func (h *Hub) backfill(ctx context.Context, sub *subscriber, after, until int64, sink Sink) (int64, error) {
	for {
		evs, err := h.store.EventsAfter(ctx, after, PageSize)
		if err != nil {
			return after, fmt.Errorf("read events: %w", err)
		}
		for _, ev := range evs {
			if until > 0 && ev.Seq > until {
				return after, nil
			}
			data, err := Frame(ev)
			if err != nil {
				h.log.Error("firehose: encode event", "seq", ev.Seq, "err", err)
				after = ev.Seq
				continue
			}
			if err := sink.Send(ctx, data); err != nil {
				return after, h.sendErr(sub, err)
			}
			after = ev.Seq
		}
		if err := sink.Flush(ctx); err != nil {
			return after, h.sendErr(sub, err)
		}
		if len(evs) < PageSize || (until > 0 && after >= until) {
			return after, nil
		}
	}
}

// sendErr reports a failed send as ErrConsumerTooSlow when the hub cut the
// subscriber off, and as the send error otherwise.
func (h *Hub) sendErr(sub *subscriber, err error) error {
	select {
	case <-sub.slow:
		return ErrConsumerTooSlow
	default:
		return err
	}
}
