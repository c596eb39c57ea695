// Package crawl asks relays to crawl this server
// (com.atproto.sync.requestCrawl), so that they subscribe to its firehose.
// Requests go out when the server starts, after the first write that
// follows a quiet period (a relay that dropped an idle host picks it up
// again), and on demand.
package crawl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"
)

// DefaultQuiet is how long the server must have gone without a write for
// the next write to trigger new crawl requests.
const DefaultQuiet = 20 * time.Minute

// Requester sends crawl requests for one hostname to a set of relays.
type Requester struct {
	hostname string
	relays   []string
	client   *http.Client
	log      *slog.Logger
	quiet    time.Duration
	now      func() time.Time

	mu        sync.Mutex
	lastWrite time.Time
	inFlight  bool
	// asked records, per relay, the last request and its outcome, for
	// the operator's status report.
	asked map[string]Asked
}

// Asked is the last crawl request sent to one relay.
type Asked struct {
	Relay string
	// At is when it was sent (zero: not since the start).
	At time.Time
	// Err is its failure, nil when the relay accepted it.
	Err error
}

// Status returns the last request to each relay, in configuration order.
func (r *Requester) Status() []Asked {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Asked, 0, len(r.relays))
	for _, relay := range r.relays {
		a := r.asked[relay]
		a.Relay = relay
		out = append(out, a)
	}
	return out
}

// New returns a requester. relays are base URLs such as
// https://bsky.network; client may be nil.
func New(hostname string, relays []string, client *http.Client, log *slog.Logger) *Requester {
	if client == nil {
		client = &http.Client{Timeout: 15 * time.Second}
	}
	if log == nil {
		log = slog.Default()
	}
	return &Requester{hostname: hostname, relays: relays, client: client, log: log, quiet: DefaultQuiet, now: time.Now}
}

// Request sends a crawl request to every relay and returns the errors of
// those that failed, joined.
func (r *Requester) Request(ctx context.Context) error {
	var errs []error
	for _, relay := range r.relays {
		at := r.now()
		err := r.requestOne(ctx, relay)
		if err != nil {
			errs = append(errs, err)
		}
		r.mu.Lock()
		if r.asked == nil {
			r.asked = map[string]Asked{}
		}
		r.asked[relay] = Asked{Relay: relay, At: at, Err: err}
		r.mu.Unlock()
	}
	return errors.Join(errs...)
}

func (r *Requester) requestOne(ctx context.Context, relay string) error {
	body, _ := json.Marshal(map[string]string{"hostname": r.hostname})
	url := strings.TrimRight(relay, "/") + "/xrpc/com.atproto.sync.requestCrawl"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("request crawl from %s: %w", relay, err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := r.client.Do(req)
	if err != nil {
		return fmt.Errorf("request crawl from %s: %w", relay, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("request crawl from %s: %s: %s", relay, resp.Status, strings.TrimSpace(string(msg)))
	}
	return nil
}

// Wrote records a write. The first write after a quiet period sends crawl
// requests in the background; it never delays the write.
func (r *Requester) Wrote() {
	if len(r.relays) == 0 {
		return
	}
	r.mu.Lock()
	now := r.now()
	due := !r.lastWrite.IsZero() && now.Sub(r.lastWrite) >= r.quiet && !r.inFlight
	r.lastWrite = now
	if due {
		r.inFlight = true
	}
	r.mu.Unlock()
	if !due {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := r.Request(ctx); err != nil {
			r.log.Warn("request crawl", "err", err)
		}
		r.mu.Lock()
		r.inFlight = false
		r.mu.Unlock()
	}()
}

// Started sends crawl requests when the server starts, in the background.
func (r *Requester) Started(ctx context.Context) {
	if len(r.relays) == 0 {
		return
	}
	r.mu.Lock()
	r.lastWrite = r.now()
	r.mu.Unlock()
	go func() {
		ctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		if err := r.Request(ctx); err != nil {
			r.log.Warn("request crawl", "err", err)
		} else {
			r.log.Info("requested crawl", "relays", r.relays)
		}
	}()
}
