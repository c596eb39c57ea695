package xrpc

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/coder/websocket"

	"stratus/internal/auth"
	"stratus/internal/pdserr"
	"stratus/internal/sequencer"
)

// pingInterval keeps idle subscriptions alive through proxies and finds
// dead peers.
const pingInterval = 30 * time.Second

// handleSyncSubscribeRepos serves com.atproto.sync.subscribeRepos, the
// firehose, over WebSocket.
func (s *Server) handleSyncSubscribeRepos(w http.ResponseWriter, r *http.Request, _ *auth.Principal) error {
	var cursor *int64
	if v := r.URL.Query().Get("cursor"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return pdserr.New(pdserr.InvalidRequest, "Error: cursor must be a non-negative integer")
		}
		cursor = &n
	}
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		return pdserr.New(pdserr.InvalidRequest, "Expected WebSocket upgrade")
	}
	cw := &fanoutWriter{ResponseWriter: w}
	c, err := websocket.Accept(cw, r, &websocket.AcceptOptions{
		// The firehose is public data; any page may read it.
		InsecureSkipVerify: true,
		CompressionMode:    websocket.CompressionDisabled,
	})
	if err != nil {
		return errClientGone // Accept has answered the request itself
	}
	c.SetReadLimit(64 << 10)
	ctx := c.CloseRead(r.Context())
	go keepAlive(ctx, c)

	sink := &wsSink{c: c, conn: cw.conn}
	err = s.deps.Hub.Stream(ctx, cursor, sink)
	sink.release()
	switch {
	case errors.Is(err, sequencer.ErrFutureCursor):
		closeWithError(c, "FutureCursor", "Cursor in the future.", websocket.StatusPolicyViolation)
	case errors.Is(err, sequencer.ErrConsumerTooSlow):
		closeWithError(c, "ConsumerTooSlow", "Stream consumer too slow", websocket.StatusPolicyViolation)
	default:
		c.Close(websocket.StatusGoingAway, "")
	}
	return nil
}

// wsSink sends a subscriber's frames as WebSocket messages, a batch at a
// time.
type wsSink struct {
	c    *websocket.Conn
	conn *fanoutConn
	// stop and interrupted are set once the end of the subscription is
	// set to interrupt a blocked write.
	stop        func() bool
	interrupted chan struct{}
}

// release undoes the interruption once the subscription is over, so that
// a last error frame and the close can still be written (each bounded by
// its own timeout).
func (s *wsSink) release() {
	if s.stop == nil {
		return
	}
	if !s.stop() {
		<-s.interrupted
	}
	s.conn.SetWriteDeadline(time.Time{})
}

// Send adds one frame to the batch, writing the batch out early when it
// grows large.
func (s *wsSink) Send(ctx context.Context, data []byte) error {
	if s.conn.AppendMessage(data) >= maxBatchBytes {
		return s.Flush(ctx)
	}
	return nil
}

// TrySend writes frames without waiting, for the hub's goroutine.
func (s *wsSink) TrySend(frames [][]byte) (accepted, pending bool) {
	return s.conn.TryWrite(frames)
}

// Flush writes the batch. A subscription that ends (its peer fell a whole
// queue behind, or the server stops) interrupts a write blocked on a peer
// that reads nothing.
func (s *wsSink) Flush(ctx context.Context) error {
	if s.stop == nil {
		s.interrupted = make(chan struct{})
		s.stop = context.AfterFunc(ctx, func() {
			defer close(s.interrupted)
			s.conn.Interrupt()
		})
	}
	if err := s.conn.Flush(); err != nil {
		// Close so that the read side ends too.
		s.c.CloseNow()
		return err
	}
	return ctx.Err()
}

// closeWithError sends an error frame and closes the connection, within a
// few seconds whatever the peer does.
func closeWithError(c *websocket.Conn, name, message string, code websocket.StatusCode) {
	frame, err := sequencer.ErrorFrame(name, message)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c.Write(ctx, websocket.MessageBinary, frame)
		cancel()
	}
	c.Close(code, name)
}

// keepAlive pings the peer until ctx ends; a peer that stops answering is
// disconnected, which ends its subscription.
func keepAlive(ctx context.Context, c *websocket.Conn) {
	t := time.NewTicker(pingInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			pctx, cancel := context.WithTimeout(ctx, pingInterval)
			err := c.Ping(pctx)
			cancel()
			if err != nil {
				c.Close(websocket.StatusGoingAway, "ping timeout")
				return
			}
		}
	}
}
