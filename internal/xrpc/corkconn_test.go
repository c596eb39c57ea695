package xrpc

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// Messages framed by fanoutConn, at every length encoding, interleaved
// with a ping that coder/websocket writes itself, reach a standard client
// intact and in order.
func TestFanoutConnFraming(t *testing.T) {
	sizes := []int{0, 1, 125, 126, 127, 65535, 65536, 300_000}
	done := make(chan error, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fw := &fanoutWriter{ResponseWriter: w}
		c, err := websocket.Accept(fw, r, nil)
		if err != nil {
			done <- err
			return
		}
		ctx := c.CloseRead(context.Background())
		for i, n := range sizes {
			fw.conn.AppendMessage(bytes.Repeat([]byte{byte(i)}, n))
			if i == 3 {
				// A ping waits in the batch; the client answers it once
				// the batch is flushed.
				go func() {
					pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
					defer cancel()
					done <- c.Ping(pctx)
				}()
				time.Sleep(10 * time.Millisecond)
			}
		}
		if err := fw.conn.Flush(); err != nil {
			done <- err
			return
		}
		<-ctx.Done()
	}))
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	c.SetReadLimit(1 << 20)
	for i, n := range sizes {
		typ, data, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if typ != websocket.MessageBinary || !bytes.Equal(data, bytes.Repeat([]byte{byte(i)}, n)) {
			t.Fatalf("message %d: type %v, %d bytes, want binary %d bytes of %d", i, typ, len(data), n, i)
		}
	}
	// Reading on answers the ping.
	go c.Read(ctx)
	if err := <-done; err != nil {
		t.Fatalf("ping through the batch: %v", err)
	}
}

func TestAppendFrameHeader(t *testing.T) {
	cases := []struct {
		n    int
		want []byte
	}{
		{0, []byte{0x82, 0}},
		{125, []byte{0x82, 125}},
		{126, []byte{0x82, 126, 0, 126}},
		{65535, []byte{0x82, 126, 0xff, 0xff}},
		{65536, []byte{0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0}},
	}
	for _, c := range cases {
		if got := appendFrameHeader(nil, c.n); !bytes.Equal(got, c.want) {
			t.Errorf("header(%d) = %x, want %x", c.n, got, c.want)
		}
	}
}
