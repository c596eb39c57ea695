package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"net/http"
	"strings"
	"sync"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/atdata"
	"github.com/gorilla/websocket"

	"stratus/internal/sequencer"
)

// maxFrame bounds one firehose message (a commit carries at most a few
// megabytes of blocks).
const maxFrame = 16 << 20

// subscriber is one firehose connection, remembering when each created
// record's commit arrived. While the writes run it only appends what it
// received to a list; the list is indexed by record CID when asked (has),
// so the subscribers take as little as possible of the cores they share
// with the server.
type subscriber struct {
	conn   *websocket.Conn
	frames *frameCache
	done   chan struct{}

	mu         sync.Mutex
	deliveries []delivered
	indexed    int                  // deliveries already in got
	got        map[string]time.Time // record CID → arrival
	err        error
}

// delivered is one frame received.
type delivered struct {
	frame *frameInfo
	at    time.Time
}

func (s *subscriber) read(ctx context.Context) {
	defer close(s.done)
	var buf bytes.Buffer // reused: one message at a time
	for {
		_, rd, err := s.conn.NextReader()
		if err == nil {
			buf.Reset()
			_, err = buf.ReadFrom(rd)
		}
		at := time.Now()
		if err != nil {
			if ctx.Err() == nil {
				s.fail(fmt.Errorf("firehose connection ended: %w", err))
			}
			return
		}
		fi := s.frames.decode(buf.Bytes())
		if fi.err != nil {
			s.fail(fi.err)
			return
		}
		s.mu.Lock()
		s.deliveries = append(s.deliveries, delivered{fi, at})
		s.mu.Unlock()
	}
}

// frameCache decodes each distinct frame once. A server sends the same
// bytes to every subscriber, so the others find the result by a hash of
// the bytes instead of decoding again: the load generator shares the
// server's cores, and a hundred decoders would measure mostly themselves.
// A server that encodes per subscriber still works, only slower.
type frameCache struct {
	seed maphash.Seed
	m    sync.Map // frameKey → *frameInfo
}

type frameKey struct {
	hash uint64
	size int
}

// frameInfo is a decoded frame: the CIDs of the records its commit
// creates.
type frameInfo struct {
	once sync.Once
	cids []string
	err  error
}

func newFrameCache() *frameCache {
	return &frameCache{seed: maphash.MakeSeed()}
}

// frameKeyEdge is how much of each end of a frame its key hashes: frames
// of different events differ near the start (seq, the first op's path)
// and at the end (a commit's prevData), so the middle, mostly the blocks,
// need not be hashed a hundred times over.
const frameKeyEdge = 256

func (fc *frameCache) decode(frame []byte) *frameInfo {
	var h maphash.Hash
	h.SetSeed(fc.seed)
	if len(frame) <= 2*frameKeyEdge {
		h.Write(frame)
	} else {
		h.Write(frame[:frameKeyEdge])
		h.Write(frame[len(frame)-frameKeyEdge:])
	}
	k := frameKey{h.Sum64(), len(frame)}
	v, ok := fc.m.Load(k)
	if !ok {
		v, _ = fc.m.LoadOrStore(k, &frameInfo{})
	}
	fi := v.(*frameInfo)
	fi.once.Do(func() { fi.cids, fi.err = createdCIDs(frame) })
	return fi
}

func (s *subscriber) fail(err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
	}
	s.mu.Unlock()
}

// index adds the deliveries not yet indexed to got; callers hold s.mu.
func (s *subscriber) index() {
	for ; s.indexed < len(s.deliveries); s.indexed++ {
		d := s.deliveries[s.indexed]
		for _, c := range d.frame.cids {
			s.got[c] = d.at
		}
	}
}

func (s *subscriber) has(c string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.index()
	_, ok := s.got[c]
	return ok || s.err != nil
}

// createdCIDs decodes a firehose frame and returns the CIDs of the
// records a #commit creates; other messages give none, error frames an
// error.
func createdCIDs(frame []byte) ([]string, error) {
	op, t, body, err := sequencer.SplitFrame(frame)
	if err != nil {
		return nil, fmt.Errorf("firehose %w", err)
	}
	if op != 1 {
		b, _ := atdata.UnmarshalCBOR(body)
		return nil, fmt.Errorf("firehose error frame: %v: %v", b["error"], b["message"])
	}
	if t != "#commit" {
		return nil, nil
	}
	var ev comatproto.SyncSubscribeRepos_Commit
	if err := ev.UnmarshalCBOR(bytes.NewReader(body)); err != nil {
		return nil, fmt.Errorf("firehose #commit: %w", err)
	}
	var out []string
	for _, op := range ev.Ops {
		if op.Action == "create" && op.Cid != nil {
			out = append(out, op.Cid.String())
		}
	}
	return out, nil
}

// subscriberDialer reads through a 64 KiB buffer, as relays do: a batch
// of commits then arrives in one read instead of one per 4 KiB.
var subscriberDialer = &websocket.Dialer{
	Proxy:            http.ProxyFromEnvironment,
	HandshakeTimeout: 45 * time.Second,
	ReadBufferSize:   64 << 10,
}

// subscribeURL turns the server origin into the subscribeRepos URL.
func subscribeURL(server string) string {
	u := strings.TrimRight(server, "/")
	if rest, ok := strings.CutPrefix(u, "https://"); ok {
		u = "wss://" + rest
	} else if rest, ok := strings.CutPrefix(u, "http://"); ok {
		u = "ws://" + rest
	}
	return u + "/xrpc/com.atproto.sync.subscribeRepos"
}

// subscriberSet is the subscribers of scenario 5, in this process or in
// one of their own.
type subscriberSet interface {
	// waitAll waits until every subscriber has each CID (or has failed),
	// for at most d.
	waitAll(ctx context.Context, cids []string, d time.Duration) bool
	// results returns, per subscriber, when each record CID arrived and
	// why it stopped, if it did.
	results() ([]subscriberResult, error)
	close()
}

// subscriberResult is what one subscriber received.
type subscriberResult struct {
	got map[string]time.Time // record CID → arrival
	err error
}

// localSubscribers are subscribers reading in this process.
type localSubscribers struct {
	subs   []*subscriber
	cancel context.CancelFunc
}

// dialSubscribers attaches n subscribers to server's firehose.
func dialSubscribers(ctx context.Context, server, bypass string, n int, timeout time.Duration) (*localSubscribers, error) {
	header := http.Header{}
	if bypass != "" {
		header.Set("x-ratelimit-bypass", bypass)
	}
	subCtx, cancel := context.WithCancel(ctx)
	ls := &localSubscribers{cancel: cancel}
	frames := newFrameCache()
	for range n {
		// gorilla/websocket, which relays built on indigo use, reads a
		// message without per-read timers or contexts: the subscribers
		// share the server's cores, so their own cost must stay small.
		dctx, dcancel := context.WithTimeout(ctx, timeout)
		conn, resp, err := subscriberDialer.DialContext(dctx, subscribeURL(server), header)
		dcancel()
		if resp != nil && resp.Body != nil {
			resp.Body.Close()
		}
		if err != nil {
			ls.close()
			return nil, fmt.Errorf("subscribeRepos: %w", err)
		}
		conn.SetReadLimit(maxFrame)
		s := &subscriber{conn: conn, frames: frames, done: make(chan struct{}), got: map[string]time.Time{}}
		ls.subs = append(ls.subs, s)
		go s.read(subCtx)
	}
	return ls, nil
}

func (ls *localSubscribers) waitAll(ctx context.Context, cids []string, d time.Duration) bool {
	return waitAll(ctx, ls.subs, cids, d)
}

func (ls *localSubscribers) results() ([]subscriberResult, error) {
	out := make([]subscriberResult, len(ls.subs))
	for i, s := range ls.subs {
		s.mu.Lock()
		s.index()
		out[i] = subscriberResult{got: s.got, err: s.err}
		s.mu.Unlock()
	}
	return out, nil
}

func (ls *localSubscribers) close() {
	ls.cancel()
	for _, s := range ls.subs {
		s.conn.Close()
		<-s.done
	}
}

// 5: S subscribers attached while sequential createRecord calls run.
func (r *run) firehose(ctx context.Context) []Result {
	n := r.opts.Records
	writeTitle := "createRecord, sequential, " + plural(r.opts.Subscribers, "subscriber")
	deliveryTitle := "firehose delivery to " + plural(r.opts.Subscribers, "subscriber")
	fail := func(err error) []Result {
		return []Result{{Title: writeTitle}, {Title: deliveryTitle, Errors: 1, FirstError: err.Error()}}
	}
	var subs subscriberSet
	var err error
	where := "in this process"
	if r.opts.SubscriberProcess != nil {
		subs, err = startSubscriberProcess(ctx, r.opts.SubscriberProcess(), r.opts.Server, r.opts.RateLimitBypass, r.opts.Subscribers, r.opts.RequestTimeout)
		where = "in a process of their own, the writer on one thread"
	} else {
		subs, err = dialSubscribers(ctx, r.opts.Server, r.opts.RateLimitBypass, r.opts.Subscribers, r.opts.RequestTimeout)
	}
	if err != nil {
		return fail(err)
	}
	defer subs.close()
	// Writes that are not measured show every subscriber is attached: a
	// subscriber without a cursor gets only events after the server has
	// registered it, which can be a moment after its handshake, so a
	// probe is repeated until one reaches every subscriber.
	attached := false
	for deadline := time.Now().Add(30 * time.Second); !attached && time.Now().Before(deadline); {
		probe, err := r.create(ctx, Firehose, -1)
		if err != nil {
			return fail(fmt.Errorf("probe write: %w", err))
		}
		attached = subs.waitAll(ctx, []string{probe.CID}, 2*time.Second)
	}
	if !attached {
		return fail(errors.New("not every subscriber received a probe write's commit within 30s"))
	}

	var sentMu sync.Mutex
	sent := map[string]time.Time{}
	order := make([]string, 0, n)
	t, elapsed := r.sequentialCreates(ctx, Firehose, n, func(c string, at time.Time) {
		sentMu.Lock()
		sent[c] = at
		order = append(order, c)
		sentMu.Unlock()
	})
	writes := t.result(writeTitle, "/s", elapsed, 1)
	writes.Notes = stoppedEarly(writes.Count+writes.Errors, n, r.opts.MaxTime)
	if r.seqPS > 0 && writes.PerSecond > 0 {
		writes.Notes = append(writes.Notes, fmt.Sprintf("%.2f× the rate of scenario 1 without subscribers", writes.PerSecond/r.seqPS))
	}
	// Give the stream time to deliver the last commits.
	subs.waitAll(ctx, order, 10*time.Second)
	got, err := subs.results()
	if err != nil {
		return fail(err)
	}

	d := &tally{}
	for _, s := range got {
		for _, c := range order {
			if at, ok := s.got[c]; ok {
				d.add(at.Sub(sent[c]), nil)
			} else if s.err != nil {
				d.add(0, s.err)
			} else {
				d.add(0, fmt.Errorf("commit of record %s not delivered within 10s of the last write", c))
			}
		}
	}
	delivery := d.result(deliveryTitle, "events/s", elapsed, 1)
	delivery.Notes = []string{"latency from sending the write to the subscriber receiving its #commit; subscribers read every frame whole, and each distinct frame is decoded once; subscribers " + where}
	return []Result{writes, delivery}
}

// waitAll waits until every subscriber has each CID (or has failed), for
// at most d.
func waitAll(ctx context.Context, subs []*subscriber, cids []string, d time.Duration) bool {
	deadline := time.Now().Add(d)
	// Commits arrive in order, so each subscriber's scan resumes where
	// it stopped.
	pos := make([]int, len(subs))
	for {
		all := true
		for i, s := range subs {
			for pos[i] < len(cids) && s.has(cids[pos[i]]) {
				pos[i]++
			}
			all = all && pos[i] == len(cids)
		}
		if all {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
}
