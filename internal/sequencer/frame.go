package sequencer

import (
	"bytes"
	"fmt"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/atdata"
	"github.com/ipfs/go-cid"
	cbg "github.com/whyrusleeping/cbor-gen"

	"stratus/internal/atjson"
)

// Stored is an event as read back from storage.
type Stored struct {
	Seq     int64
	Type    string
	Payload []byte
}

// frameHeaders are the encoded frame headers {op: 1, t: "#type"} of the
// stored event types; computed once, never changed.
var frameHeaders = func() map[string][]byte {
	m := map[string][]byte{}
	for _, typ := range []string{TypeCommit, TypeSync, TypeIdentity, TypeAccount} {
		hdr, err := atdata.MarshalCBOR(map[string]any{"op": int64(1), "t": "#" + typ})
		if err != nil {
			panic(fmt.Sprintf("encode frame header: %v", err))
		}
		m[typ] = hdr
	}
	return m
}()

// Frame encodes a stored event as a subscribeRepos frame: a DAG-CBOR
// header {op: 1, t: "#type"} followed by the body with its seq set. The
// bytes are those indigo's events package writes for the same event.
//
// A stored body is the event encoded with seq 0, so the frame is the body
// with that one value replaced: seq is a top-level key, and DAG-CBOR's
// key order does not depend on values. The body's structure is checked
// on the way (every item well formed, nothing after the map); anything
// unexpected goes through indigo's decoder and encoder instead, which
// give the same bytes for any body the server writes.
func Frame(ev Stored) ([]byte, error) {
	hdr, ok := frameHeaders[ev.Type]
	if !ok {
		return nil, fmt.Errorf("unknown event type %q (seq %d)", ev.Type, ev.Seq)
	}
	if at, ok := seqZeroAt(ev.Payload); ok && ev.Seq >= 0 {
		var seq bytes.Buffer
		if err := cbg.NewCborWriter(&seq).WriteMajorTypeHeader(cbg.MajUnsignedInt, uint64(ev.Seq)); err != nil {
			return nil, err
		}
		out := make([]byte, 0, len(hdr)+len(ev.Payload)+seq.Len()-1)
		out = append(out, hdr...)
		out = append(out, ev.Payload[:at]...)
		out = append(out, seq.Bytes()...)
		return append(out, ev.Payload[at+1:]...), nil
	}
	return frameDecoded(hdr, ev)
}

// frameDecoded is Frame through indigo's types: decode the body, set seq,
// encode it again.
func frameDecoded(hdr []byte, ev Stored) ([]byte, error) {
	var buf bytes.Buffer
	var err error
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

// maxBodyDepth bounds the nesting seqZeroAt walks (event bodies nest a
// few levels: ops inside the body).
const maxBodyDepth = 16

// seqZeroAt returns the offset of the value of the top-level "seq" key in
// a stored body when the body is one well-formed DAG-CBOR map, with
// nothing after it, whose seq is the one-byte 0.
func seqZeroAt(b []byte) (int, bool) {
	maj, n, i, ok := atjson.Head(b, 0)
	if !ok || maj != cbg.MajMap {
		return 0, false
	}
	at := -1
	for range n {
		var kmaj byte
		var klen uint64
		if kmaj, klen, i, ok = atjson.Head(b, i); !ok || kmaj != cbg.MajTextString || uint64(len(b)-i) < klen {
			return 0, false
		}
		key := string(b[i : i+int(klen)])
		i += int(klen)
		if key == "seq" {
			if at >= 0 || i >= len(b) || b[i] != 0 {
				return 0, false
			}
			at = i
		}
		if i, ok = cborSkip(b, i, 1); !ok {
			return 0, false
		}
	}
	return at, at >= 0 && i == len(b)
}

// cborSkip returns the offset after the item at b[i], nested at depth.
func cborSkip(b []byte, i, depth int) (int, bool) {
	if depth > maxBodyDepth {
		return 0, false
	}
	maj, arg, i, ok := atjson.Head(b, i)
	if !ok {
		return 0, false
	}
	switch maj {
	case cbg.MajUnsignedInt, cbg.MajNegativeInt, cbg.MajOther:
		return i, true
	case cbg.MajByteString, cbg.MajTextString:
		if uint64(len(b)-i) < arg {
			return 0, false
		}
		return i + int(arg), true
	case cbg.MajArray, cbg.MajMap:
		// Every item takes a byte at least.
		if arg > uint64(len(b)-i) {
			return 0, false
		}
		items := arg
		if maj == cbg.MajMap {
			items *= 2
		}
		for range items {
			if i, ok = cborSkip(b, i, depth+1); !ok {
				return 0, false
			}
		}
		return i, true
	case cbg.MajTag:
		return cborSkip(b, i, depth+1)
	}
	return 0, false
}

// SplitFrame splits a subscribeRepos message into its DAG-CBOR header,
// which must be a map holding an integer op and, for messages, a string
// t (and nothing else), and the body after it; the reading side of Frame,
// InfoFrame and ErrorFrame.
func SplitFrame(data []byte) (op int64, t string, body []byte, err error) {
	r := bytes.NewReader(data)
	if err := cbg.ScanForLinks(r, func(cid.Cid) {}); err != nil {
		return 0, "", nil, fmt.Errorf("frame header: %w", err)
	}
	n := len(data) - r.Len()
	hdr, err := atdata.UnmarshalCBOR(data[:n])
	if err != nil {
		return 0, "", nil, fmt.Errorf("frame header is not a map: %w", err)
	}
	op, ok := hdr["op"].(int64)
	if !ok {
		return 0, "", nil, fmt.Errorf("frame header %v has no integer op", hdr)
	}
	fields := 1
	if v, present := hdr["t"]; present {
		if t, ok = v.(string); !ok {
			return 0, "", nil, fmt.Errorf("frame header %v: t is not a string", hdr)
		}
		fields++
	}
	if len(hdr) != fields {
		return 0, "", nil, fmt.Errorf("frame header %v has unexpected fields", hdr)
	}
	return op, t, data[n:], nil
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
