package sequencer_test

import (
	"bytes"
	"testing"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/syntax"

	"stratus/internal/sequencer"
)

func TestEvents_RoundTrip(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 600_000_000, time.UTC)
	did := syntax.DID("did:plc:abc")
	t.Run("Account", func(t *testing.T) {
		for _, tc := range []struct {
			active bool
			status string
		}{{true, ""}, {false, "deactivated"}} {
			ev, err := sequencer.Account(did, tc.active, tc.status, at)
			if err != nil {
				t.Fatal(err)
			}
			var got comatproto.SyncSubscribeRepos_Account
			if err := got.UnmarshalCBOR(bytes.NewReader(ev.Payload)); err != nil {
				t.Fatal(err)
			}
			if ev.Type != sequencer.TypeAccount || got.Did != did.String() || got.Active != tc.active || got.Time != "2026-01-02T03:04:05.6Z" {
				t.Fatalf("got %+v", got)
			}
			if (got.Status == nil) != (tc.status == "") {
				t.Fatalf("status = %v, want %q", got.Status, tc.status)
			}
		}
	})
	t.Run("Identity", func(t *testing.T) {
		ev, err := sequencer.Identity(did, "", at)
		if err != nil {
			t.Fatal(err)
		}
		var got comatproto.SyncSubscribeRepos_Identity
		if err := got.UnmarshalCBOR(bytes.NewReader(ev.Payload)); err != nil {
			t.Fatal(err)
		}
		if got.Handle != nil || got.Did != did.String() {
			t.Fatalf("got %+v", got)
		}
	})
	t.Run("Sync", func(t *testing.T) {
		ev, err := sequencer.Sync(did, "3jzfcijpj2z2a", []byte{1, 2, 3}, at)
		if err != nil {
			t.Fatal(err)
		}
		var got comatproto.SyncSubscribeRepos_Sync
		if err := got.UnmarshalCBOR(bytes.NewReader(ev.Payload)); err != nil {
			t.Fatal(err)
		}
		if got.Rev != "3jzfcijpj2z2a" || !bytes.Equal(got.Blocks, []byte{1, 2, 3}) || ev.Type != sequencer.TypeSync {
			t.Fatalf("got %+v", got)
		}
	})
}
