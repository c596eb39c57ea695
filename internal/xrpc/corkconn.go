package xrpc

import (
	"bufio"
	"encoding/binary"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"
)

// maxBatchBytes is how much a firehose subscriber's batch may hold before
// it is written out, so a long batch cannot grow memory without limit.
const maxBatchBytes = 256 << 10

// fanoutConn is the connection under a firehose subscriber's WebSocket. It
// lets the subscriber's messages leave in one socket write per batch
// instead of one per message: coder/websocket frames and flushes every
// message on its own, which with a hundred subscribers was most of the
// cost of an event. The hub hands a subscriber every event waiting for it
// at once; AppendMessage frames each into a buffer and Flush writes the
// buffer with one system call.
//
// coder/websocket still owns the connection's handshake, reads, and its
// control frames (pings, pongs, close). Those arrive here as single
// Write calls, each one whole frame, so they never interleave with a
// message; while a batch is being built they wait in the same buffer and
// leave, in order, with it.
type fanoutConn struct {
	net.Conn
	// raw writes without blocking (TryWrite); nil when the connection has
	// no file descriptor.
	raw     syscall.RawConn
	mu      sync.Mutex
	pending bool // a batch is being built: hold writes until Flush
	buf     []byte
}

// Write is how coder/websocket writes its own frames.
func (c *fanoutConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pending && len(c.buf)+len(p) <= maxBatchBytes {
		c.buf = append(c.buf, p...)
		return len(p), nil
	}
	if len(c.buf) == 0 {
		return c.Conn.Write(p)
	}
	held := len(c.buf)
	bufs := net.Buffers{c.buf, p}
	n, err := bufs.WriteTo(c.Conn)
	c.buf = c.buf[:0]
	return max(int(n)-held, 0), err
}

// AppendMessage adds one binary message to the batch, framed as a server
// sends it (RFC 6455 §5.2: final fragment, binary opcode, not masked),
// and returns the bytes the batch now holds.
func (c *fanoutConn) AppendMessage(p []byte) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pending = true
	c.buf = appendFrameHeader(c.buf, len(p))
	c.buf = append(c.buf, p...)
	return len(c.buf)
}

// appendFrameHeader appends the header of an unmasked, final binary frame
// with an n-byte payload.
func appendFrameHeader(b []byte, n int) []byte {
	b = append(b, 0x82) // FIN + binary
	switch {
	case n < 126:
		return append(b, byte(n))
	case n <= 0xFFFF:
		return binary.BigEndian.AppendUint16(append(b, 126), uint16(n))
	default:
		return binary.BigEndian.AppendUint64(append(b, 127), uint64(n))
	}
}

// Flush writes the batch. It has no deadline of its own: a peer that
// stops reading makes its queue in the hub overflow, and the end of the
// subscription then interrupts the write (see Interrupt); a peer that
// stops answering pings is closed by the keep-alive. Setting a deadline
// around every batch cost more than the rest of the flush but the write.
func (c *fanoutConn) Flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pending = false
	if len(c.buf) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.buf)
	if cap(c.buf) > maxBatchBytes {
		c.buf = nil // let one oversized message's memory go
	} else {
		c.buf = c.buf[:0]
	}
	return err
}

// TryWrite appends messages to the batch and writes what the socket takes
// without blocking; it is how the hub writes to a subscriber that keeps
// up. accepted false means nothing was taken (the connection is busy or
// has no descriptor, or a batch is already too large); pending true means
// bytes are held for the next Flush.
func (c *fanoutConn) TryWrite(msgs [][]byte) (accepted, pending bool) {
	if c.raw == nil || !c.mu.TryLock() {
		return false, false
	}
	defer c.mu.Unlock()
	if len(c.buf) > maxBatchBytes {
		return false, false
	}
	held := len(c.buf)
	for _, m := range msgs {
		c.buf = appendFrameHeader(c.buf, len(m))
		c.buf = append(c.buf, m...)
	}
	written, called := 0, false
	err := c.raw.Write(func(fd uintptr) bool {
		called = true
		for written < len(c.buf) {
			n, err := syscall.Write(int(fd), c.buf[written:])
			if n > 0 {
				written += n
			}
			if err == syscall.EINTR {
				continue
			}
			if err != nil || n <= 0 {
				break // EAGAIN: the socket is full; the rest waits for Flush
			}
		}
		return true // never wait here
	})
	if !called || (err != nil && written == 0) {
		// A deadline passed or the connection is closed: leave the
		// frames to the subscriber's goroutine, which will see the error.
		c.buf = c.buf[:held]
		return false, false
	}
	c.buf = c.buf[:copy(c.buf, c.buf[written:])]
	return true, len(c.buf) > 0
}

// Interrupt makes a write blocked in Flush, and every later one, fail at
// once: a deadline in the past.
func (c *fanoutConn) Interrupt() {
	c.Conn.SetWriteDeadline(time.Unix(1, 0))
}

// fanoutWriter hands coder/websocket a fanoutConn when it hijacks the
// connection.
type fanoutWriter struct {
	http.ResponseWriter
	conn *fanoutConn
}

// Hijack takes over the connection through any middleware wrappers and
// wraps it in a fanoutConn. The reader keeps any bytes already buffered.
func (w *fanoutWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	w.conn = &fanoutConn{Conn: nc}
	if sc, ok := nc.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			w.conn.raw = raw
		}
	}
	return w.conn, bufio.NewReadWriter(brw.Reader, bufio.NewWriterSize(w.conn, 4<<10)), nil
}

// Unwrap gives http.ResponseController access to the wrapped writer.
func (w *fanoutWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
