package sequencer

import (
	"context"
	"log/slog"
	"testing"
	"time"
)

// Ensure a hub with more than cohortSize subscribers serves them in turns:
// one turn offers the pending frames to about cohortSize of them, each
// subscriber once per round, and the round ends with nobody owed.
func TestHub_ServesInTurns(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h := &Hub{log: slog.New(slog.DiscardHandler), buffer: 10, notify: make(chan struct{}, 1), ctx: ctx}
	const n = 40
	subs := make([]*subscriber, n)
	for i := range subs {
		s, _, err := h.subscribe(ctx, cancel, SendFunc(func(context.Context, []byte) error { return nil }))
		if err != nil {
			t.Fatal(err)
		}
		s.live.Store(true)
		subs[i] = s
	}
	ev, err := Identity("did:plc:abc", "alice.test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	h.add([]Stored{{Seq: 1, Type: ev.Type, Payload: ev.Payload}, {Seq: 2, Type: ev.Type, Payload: ev.Payload}})

	turns := turnsFor(n) // 3
	per := (n + turns - 1) / turns
	served := func() (k int) {
		for _, s := range subs {
			if len(s.ch) > 0 {
				k++
			}
		}
		return k
	}
	for turn := 1; turn <= turns; turn++ {
		owed := h.serve()
		if want := min(n, turn*per); served() != want {
			t.Fatalf("after turn %d: %d subscribers served, want %d", turn, served(), want)
		}
		if owed != (turn < turns) {
			t.Fatalf("after turn %d: owed = %v", turn, owed)
		}
	}
	for i, s := range subs {
		if len(s.ch) != 2 {
			t.Errorf("subscriber %d got %d frames, want 2", i, len(s.ch))
		}
	}
	if len(h.pending) != 0 {
		t.Errorf("%d frames still pending after every subscriber was served", len(h.pending))
	}
}
