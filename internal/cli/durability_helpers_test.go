package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/coder/websocket"

	"stratus/internal/sequencer"
)

// xrpcCall sends one XRPC request and decodes a 200 answer into out.
func xrpcCall(t *testing.T, client *http.Client, method, base, nsid, token string, in, out any) int {
	t.Helper()
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, base+"/xrpc/"+nsid, body)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusOK && out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s: %v", nsid, err)
		}
	}
	return resp.StatusCode
}

// listAll lists every post: rkey -> CID.
func listAll(t *testing.T, client *http.Client, base, did string) map[string]string {
	t.Helper()
	out := map[string]string{}
	cursor := ""
	for {
		var page struct {
			Cursor  string `json:"cursor"`
			Records []struct {
				URI string `json:"uri"`
				CID string `json:"cid"`
			} `json:"records"`
		}
		q := url.Values{"repo": {did}, "collection": {"app.bsky.feed.post"}, "limit": {"100"}}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		if code := xrpcCall(t, client, http.MethodGet, base, "com.atproto.repo.listRecords?"+q.Encode(), "", nil, &page); code != http.StatusOK {
			t.Fatalf("listRecords = %d", code)
		}
		for _, r := range page.Records {
			out[r.URI[strings.LastIndex(r.URI, "/")+1:]] = r.CID
		}
		if page.Cursor == "" {
			return out
		}
		cursor = page.Cursor
	}
}

// dialFirehose subscribes to base's firehose from cursor.
func dialFirehose(t *testing.T, base string, cursor int64) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	c, _, err := websocket.Dial(ctx, strings.Replace(base, "http://", "ws://", 1)+fmt.Sprintf("/xrpc/com.atproto.sync.subscribeRepos?cursor=%d", cursor), nil)
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadLimit(10 << 20)
	t.Cleanup(func() { c.CloseNow() })
	return c
}

// readFirehose reads one frame within 30 seconds.
func readFirehose(t *testing.T, c *websocket.Conn) frame {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, data, err := c.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	f, err := parseFrame(data)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// frame is a firehose message split into header and body.
type frame struct {
	Op   int64
	T    string
	Body []byte
}

// parseFrame splits a firehose message into its DAG-CBOR header and body.
func parseFrame(data []byte) (frame, error) {
	op, t, body, err := sequencer.SplitFrame(data)
	return frame{Op: op, T: t, Body: body}, err
}

// mustSeq decodes the seq of an #identity or #account frame.
func (f frame) mustSeq(t *testing.T) int64 {
	t.Helper()
	r := bytes.NewReader(f.Body)
	switch f.T {
	case "#identity":
		var ev comatproto.SyncSubscribeRepos_Identity
		if err := ev.UnmarshalCBOR(r); err != nil {
			t.Fatal(err)
		}
		return ev.Seq
	case "#account":
		var ev comatproto.SyncSubscribeRepos_Account
		if err := ev.UnmarshalCBOR(r); err != nil {
			t.Fatal(err)
		}
		return ev.Seq
	}
	t.Fatalf("unexpected frame %s", f.T)
	return 0
}
