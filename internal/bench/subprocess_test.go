package bench

import (
	"context"
	"flag"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"stratus/internal/pdstest"
)

// subscriberChildEnv makes the test binary act as the subscribers'
// process (what `pds bench-subscribers` runs).
const subscriberChildEnv = "STRATUS_TEST_BENCH_SUBSCRIBERS"

func TestMain(m *testing.M) {
	if os.Getenv(subscriberChildEnv) == "1" {
		fs := flag.NewFlagSet("bench-subscribers", flag.ExitOnError)
		server := fs.String("server", "", "")
		bypass := fs.String("ratelimit-bypass", "", "")
		n := fs.Int("subscribers", 1, "")
		timeout := fs.Duration("timeout", time.Minute, "")
		fs.Parse(os.Args[1:])
		if err := RunSubscriberProcess(context.Background(), os.Stdin, os.Stdout, *server, *bypass, *n, *timeout); err != nil {
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func subscriberChild() *exec.Cmd {
	c := exec.Command(os.Args[0])
	c.Env = append(os.Environ(), subscriberChildEnv+"=1")
	return c
}

// Ensure subscribers in a process of their own attach, wait for commits,
// and report when each record's commit arrived, for every subscriber.
func TestSubscriberProcess(t *testing.T) {
	s := pdstest.NewServer(t)
	ctx := context.Background()
	ps, err := startSubscriberProcess(ctx, subscriberChild(), s.URL(), "", 2, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer ps.close()
	if ps.waitAll(ctx, []string{"bafyreinotacid"}, 100*time.Millisecond) {
		t.Error("waitAll reported a commit that was never made")
	}
	var cids []string
	// The subscribers may be registered a moment after their handshake:
	// write until one commit reaches both.
	for attempt := 0; ; attempt++ {
		w := s.CreateRecord(t, "app.bsky.feed.post", "", map[string]any{"$type": "app.bsky.feed.post", "text": "hi", "createdAt": time.Now().UTC().Format(time.RFC3339)})
		if ps.waitAll(ctx, []string{w.CID}, 2*time.Second) {
			cids = append(cids, w.CID)
			break
		}
		if attempt == 10 {
			t.Fatal("no commit reached both subscribers")
		}
	}
	before := time.Now()
	w := s.CreateRecord(t, "app.bsky.feed.post", "", map[string]any{"$type": "app.bsky.feed.post", "text": "again", "createdAt": time.Now().UTC().Format(time.RFC3339)})
	cids = append(cids, w.CID)
	if !ps.waitAll(ctx, cids, 5*time.Second) {
		t.Fatal("the second commit did not reach both subscribers")
	}
	res, err := ps.results()
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 2 {
		t.Fatalf("%d results, want 2", len(res))
	}
	for i, r := range res {
		at, ok := r.got[w.CID]
		if r.err != nil || !ok || at.Before(before) || time.Since(at) > time.Minute {
			t.Errorf("subscriber %d: %v, arrival %v (ok %v), want after %v", i, r.err, at, ok, before)
		}
	}
}

// Ensure a subscribers' process that cannot attach reports why.
func TestSubscriberProcessCannotAttach(t *testing.T) {
	_, err := startSubscriberProcess(context.Background(), subscriberChild(), "http://127.0.0.1:1", "", 1, 2*time.Second)
	if err == nil || !strings.Contains(err.Error(), "subscribeRepos") {
		t.Fatalf("err = %v, want the dial error", err)
	}
}
