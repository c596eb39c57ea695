package sequencer

import (
	"bytes"
	"fmt"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/atdata"
)

// Stored is an event as read back from storage.
type Stored struct {
	Seq     int64
	Type    string
	Payload []byte
}

// Frame encodes a stored event as a subscribeRepos frame: a DAG-CBOR
// header {op: 1, t: "#type"} followed by the body with its seq set. The
// bytes are those indigo's events package writes for the same event.
func Frame(ev Stored) ([]byte, error) {
	var buf bytes.Buffer
	hdr, err := atdata.MarshalCBOR(map[string]any{"op": int64(1), "t": "#" + ev.Type})
	if err != nil {
		return nil, fmt.Errorf("encode frame header: %w", err)
	}
	buf.Write(hdr)
	r := bytes.NewReader(ev.Payload)
	switch ev.Type {
	case TypeCommit:
		var b comatproto.SyncSubscribeRepos_Commit
		if err := b.UnmarshalCBOR(r); err != nil {
			return nil, fmt.Errorf("decode stored commit event %d: %w", ev.Seq, err)
		}
		b.Seq = ev.Seq
		err = b.MarshalCBOR(&buf)
	case TypeSync:
		var b comatproto.SyncSubscribeRepos_Sync
		if err := b.UnmarshalCBOR(r); err != nil {
			return nil, fmt.Errorf("decode stored sync event %d: %w", ev.Seq, err)
		}
		b.Seq = ev.Seq
		err = b.MarshalCBOR(&buf)
	case TypeIdentity:
		var b comatproto.SyncSubscribeRepos_Identity
		if err := b.UnmarshalCBOR(r); err != nil {
			return nil, fmt.Errorf("decode stored identity event %d: %w", ev.Seq, err)
		}
		b.Seq = ev.Seq
		err = b.MarshalCBOR(&buf)
	case TypeAccount:
		var b comatproto.SyncSubscribeRepos_Account
		if err := b.UnmarshalCBOR(r); err != nil {
			return nil, fmt.Errorf("decode stored account event %d: %w", ev.Seq, err)
		}
		b.Seq = ev.Seq
		err = b.MarshalCBOR(&buf)
	default:
		return nil, fmt.Errorf("unknown event type %q (seq %d)", ev.Type, ev.Seq)
	}
	if err != nil {
		return nil, fmt.Errorf("encode event %d: %w", ev.Seq, err)
	}
	return buf.Bytes(), nil
}

// InfoFrame encodes an #info frame (e.g. OutdatedCursor).
func InfoFrame(name, message string) ([]byte, error) {
	var buf bytes.Buffer
	hdr, err := atdata.MarshalCBOR(map[string]any{"op": int64(1), "t": "#info"})
	if err != nil {
		return nil, err
	}
	buf.Write(hdr)
	info := comatproto.SyncSubscribeRepos_Info{Name: name, Message: &message}
	if err := info.MarshalCBOR(&buf); err != nil {
		return nil, fmt.Errorf("encode info frame: %w", err)
	}
	return buf.Bytes(), nil
}

// ErrorFrame encodes an error frame: header {op: -1}, body {error, message}.
func ErrorFrame(name, message string) ([]byte, error) {
	hdr, err := atdata.MarshalCBOR(map[string]any{"op": int64(-1)})
	if err != nil {
		return nil, err
	}
	body, err := atdata.MarshalCBOR(map[string]any{"error": name, "message": message})
	if err != nil {
		return nil, err
	}
	return append(hdr, body...), nil
}
