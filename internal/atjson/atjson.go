// Package atjson writes a stored DAG-CBOR record as the JSON of the atproto
// data model without building it in memory first: the bytes are walked
// once and the JSON is appended as they are read. CIDs become
// {"$link": ...}, byte strings {"$bytes": ...} and blobs their JSON object,
// following the same rules as indigo's atdata (which the read path used
// before, decoding into a map and encoding that).
//
// The transcoder only takes the common, unambiguous shapes. Anything it is
// not certain to render exactly as atdata would — floats, non-canonical
// map key order, maps that spell "$link" or "$bytes" in CBOR, legacy
// blobs, indefinite lengths, invalid UTF-8, values past atdata's limits —
// makes it return ErrFallback, and the caller takes the decode-then-encode
// path, which either renders the record or reports why it cannot.
package atjson

import (
	"encoding/base64"
	"errors"
	"math"
	"strconv"
	"unicode/utf8"

	"github.com/bluesky-social/indigo/atproto/atdata"
	"github.com/ipfs/go-cid"
)

// ErrFallback means the record has a shape the transcoder leaves to the
// full decoder; it says nothing about whether the record is valid.
var ErrFallback = errors.New("atjson: record needs the full decoder")

// maxDepth bounds nesting; real records are a few levels deep.
const maxDepth = 64

// AppendRecord appends the JSON of the DAG-CBOR record data (a map at the
// top level) to dst. On error dst is returned unchanged (up to its length)
// together with ErrFallback.
func AppendRecord(dst, data []byte) ([]byte, error) {
	if len(data) > atdata.MAX_CBOR_RECORD_SIZE {
		return dst, ErrFallback
	}
	t := transcoder{in: data, out: dst}
	if major, _, ok := t.peekHead(); !ok || major != majorMap {
		return dst, ErrFallback
	}
	if _, ok := t.item(0); !ok || t.pos != len(t.in) {
		return dst, ErrFallback
	}
	return t.out, nil
}

const (
	majorUint   = 0
	majorNegint = 1
	majorBytes  = 2
	majorText   = 3
	majorArray  = 4
	majorMap    = 5
	majorTag    = 6
	majorSimple = 7
)

type transcoder struct {
	in  []byte
	pos int
	out []byte
}

// peekHead reads the next item's major type and argument without moving.
func (t *transcoder) peekHead() (major byte, arg uint64, ok bool) {
	p := t.pos
	major, arg, ok = t.head()
	t.pos = p
	return
}

// head reads an item head at t.pos and moves past it.
func (t *transcoder) head() (major byte, arg uint64, ok bool) {
	major, arg, t.pos, ok = Head(t.in, t.pos)
	return
}

// Head reads the CBOR item head at b[i]: major type, argument (length,
// value or tag) and the offset after the head. Indefinite lengths and
// reserved encodings, which DAG-CBOR forbids, are refused.
func Head(b []byte, i int) (major byte, arg uint64, next int, ok bool) {
	if i < 0 || i >= len(b) {
		return 0, 0, i, false
	}
	major, info := b[i]>>5, b[i]&0x1f
	i++
	var n int
	switch {
	case info < 24:
		return major, uint64(info), i, true
	case info == 24:
		n = 1
	case info == 25:
		n = 2
	case info == 26:
		n = 4
	case info == 27:
		n = 8
	default:
		return 0, 0, i, false
	}
	if len(b)-i < n {
		return 0, 0, i, false
	}
	for _, c := range b[i : i+n] {
		arg = arg<<8 | uint64(c)
	}
	return major, arg, i + n, true
}

// span reads the n bytes following a string head.
func (t *transcoder) span(n uint64) ([]byte, bool) {
	if n > uint64(len(t.in)-t.pos) {
		return nil, false
	}
	s := t.in[t.pos : t.pos+int(n)]
	t.pos += int(n)
	return s, true
}

// itemKind is what item saw, for the blob checks of the enclosing map.
type itemKind struct {
	major byte
	isCID bool
	text  []byte
	n     uint64
}

// item transcodes one data item and reports what it was.
func (t *transcoder) item(depth int) (itemKind, bool) {
	if depth > maxDepth {
		return itemKind{}, false
	}
	major, arg, ok := t.head()
	if !ok {
		return itemKind{}, false
	}
	k := itemKind{major: major, n: arg}
	switch major {
	case majorUint:
		if arg > math.MaxInt64 {
			return k, false
		}
		t.out = strconv.AppendUint(t.out, arg, 10)
	case majorNegint:
		if arg > math.MaxInt64 {
			return k, false
		}
		t.out = strconv.AppendInt(t.out, -1-int64(arg), 10)
	case majorBytes:
		b, ok := t.span(arg)
		if !ok {
			return k, false
		}
		t.out = append(t.out, `{"$bytes":"`...)
		t.out = base64.RawStdEncoding.AppendEncode(t.out, b)
		t.out = append(t.out, `"}`...)
	case majorText:
		s, ok := t.span(arg)
		if !ok || len(s) > atdata.MAX_RECORD_STRING_LEN || !utf8.Valid(s) {
			return k, false
		}
		k.text = s
		t.out = AppendString(t.out, s)
	case majorArray:
		if arg > atdata.MAX_CBOR_CONTAINER_LEN {
			return k, false
		}
		t.out = append(t.out, '[')
		for i := uint64(0); i < arg; i++ {
			if i > 0 {
				t.out = append(t.out, ',')
			}
			if _, ok := t.item(depth + 1); !ok {
				return k, false
			}
		}
		t.out = append(t.out, ']')
	case majorMap:
		if !t.mapBody(arg, depth, depth == 0) {
			return k, false
		}
	case majorTag:
		// Only tag 42, a CID link: a byte string holding 0x00 (the
		// identity multibase prefix) and the binary CID.
		if arg != 42 {
			return k, false
		}
		m, n, ok := t.head()
		if !ok || m != majorBytes {
			return k, false
		}
		b, ok := t.span(n)
		if !ok || len(b) < 2 || b[0] != 0 {
			return k, false
		}
		c, err := cid.Cast(b[1:])
		if err != nil || !c.Defined() {
			return k, false
		}
		k.isCID = true
		t.out = append(t.out, `{"$link":"`...)
		t.out = append(t.out, c.String()...)
		t.out = append(t.out, `"}`...)
	case majorSimple:
		switch arg {
		case 20:
			t.out = append(t.out, "false"...)
		case 21:
			t.out = append(t.out, "true"...)
		case 22:
			t.out = append(t.out, "null"...)
		default:
			// Floats (integral ones become integers in atdata) and
			// other simple values.
			return k, false
		}
	}
	return k, true
}

// mapBody transcodes the n entries of a map. Keys must be text in DAG-CBOR
// canonical order (shorter first, then bytewise), which also rules out
// duplicates. Maps atdata reads as something other than an object are
// left to it, except blobs, whose JSON is the map itself.
func (t *transcoder) mapBody(n uint64, depth int, top bool) bool {
	if n > atdata.MAX_CBOR_CONTAINER_LEN {
		return false
	}
	var (
		prev                          []byte
		typ                           *itemKind
		refKind, sizeKind, mimeKind   itemKind
		hasCID, hasMime, hasLinkBytes bool
		hasRef, hasSize               bool
	)
	t.out = append(t.out, '{')
	for i := uint64(0); i < n; i++ {
		if i > 0 {
			t.out = append(t.out, ',')
		}
		m, kl, ok := t.head()
		if !ok || m != majorText {
			return false
		}
		key, ok := t.span(kl)
		if !ok || len(key) > atdata.MAX_OBJECT_KEY_LEN || !utf8.Valid(key) {
			return false
		}
		if i > 0 && !canonicalLess(prev, key) {
			return false
		}
		prev = key
		t.out = AppendString(t.out, key)
		t.out = append(t.out, ':')
		k, ok := t.item(depth + 1)
		if !ok {
			return false
		}
		switch string(key) {
		case "$link", "$bytes":
			hasLinkBytes = true
		case "$type":
			kk := k
			typ = &kk
		case "ref":
			refKind, hasRef = k, true
		case "size":
			sizeKind, hasSize = k, true
		case "mimeType":
			mimeKind = k
			hasMime = true
		case "cid":
			hasCID = true
		}
	}
	t.out = append(t.out, '}')
	if hasLinkBytes {
		return false
	}
	if typ != nil {
		if typ.major != majorText || len(typ.text) == 0 {
			return false
		}
		if string(typ.text) == "blob" {
			// atdata's blob: exactly $type, ref (a CID), mimeType (text)
			// and a size it renders as given (a negative one would turn
			// it into a legacy blob).
			return !top && n == 4 && hasRef && hasSize && hasMime && refKind.isCID && mimeKind.major == majorText &&
				sizeKind.major == majorUint && sizeKind.n <= math.MaxInt64
		}
		return true
	}
	if n == 2 && hasMime && hasCID {
		return false // legacy blob
	}
	return true
}

// canonicalLess reports whether key a sorts before b in DAG-CBOR map order.
func canonicalLess(a, b []byte) bool {
	if len(a) != len(b) {
		return len(a) < len(b)
	}
	return string(a) < string(b)
}

const hex = "0123456789abcdef"

// AppendString appends s as a JSON string, byte for byte as encoding/json
// writes it: quote and backslash by a backslash; \b \f \n \r \t; other
// control characters and the HTML-significant <, > and & as \u00XX;
// U+2028 and U+2029 as \u2028 and \u2029; each byte of invalid UTF-8 as
// \ufffd.
func AppendString[S []byte | string](dst []byte, s S) []byte {
	dst = append(dst, '"')
	start := 0 // s[start:i] is pending, to be copied as it is
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := decodeRune(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// decodeRune is utf8.DecodeRune for either kind of string.
func decodeRune[S []byte | string](s S) (rune, int) {
	switch v := any(s).(type) {
	case string:
		return utf8.DecodeRuneInString(v)
	default:
		return utf8.DecodeRune(v.([]byte))
	}
}
