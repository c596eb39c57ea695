package blob

import (
	"bytes"
	"mime"
	"strings"
)

// SniffLen is how many leading bytes of a blob ContentType looks at.
const SniffLen = 512

// OctetStream is the type of a blob whose type is unknown or unsafe.
const OctetStream = "application/octet-stream"

// ContentType decides the MIME type stored (and later served) for a blob
// from the declared Content-Type of the upload and the blob's first bytes:
//
//   - A declared type that is missing, "*/*", application/octet-stream or
//     malformed is replaced by the type sniffed from the bytes, or
//     application/octet-stream when the bytes are not recognised.
//   - A specific declared type is kept when it is consistent with the
//     bytes: the sniffed type is the same or a variant of the same
//     container (image/jpg for JPEG, video/quicktime or image/heic for an
//     ISO-BMFF "ftyp" file), or the bytes are not of a recognised format
//     and the declared type is not one the sniffer knows. Otherwise the
//     sniffed type wins (a PNG declared as image/jpeg is stored as
//     image/png) or, for a type the sniffer knows but the bytes do not
//     match, application/octet-stream.
//   - Whatever the outcome, a type that a browser could execute or render
//     as a document in the server's origin (HTML, XML, SVG, JavaScript,
//     and anything not on the allowlist of media and plain data types) is
//     stored as application/octet-stream.
func ContentType(declared string, head []byte) string {
	sniffed := Sniff(head)
	decl, generic := normalise(declared)
	var t string
	switch {
	case generic && sniffed != "":
		t = sniffed
	case generic:
		t = OctetStream
	case sniffed != "":
		if compatible(decl, sniffed) {
			t = decl
		} else {
			t = sniffed
		}
	case sniffable[decl]:
		// The sniffer recognises this format and did not find it.
		t = OctetStream
	default:
		t = decl
	}
	if !Safe(t) {
		return OctetStream
	}
	return t
}

// normalise lowercases a Content-Type and strips its parameters; generic
// is true when it says nothing about the content.
func normalise(ct string) (t string, generic bool) {
	ct = strings.TrimSpace(ct)
	if ct == "" {
		return "", true
	}
	t, _, err := mime.ParseMediaType(ct)
	if err != nil || len(t) > 127 {
		return "", true
	}
	t = strings.ToLower(t)
	main, sub, ok := strings.Cut(t, "/")
	if !ok || main == "" || sub == "" || main == "*" || sub == "*" || t == OctetStream {
		return "", true
	}
	return t, false
}

// magic is one file signature: the bytes at an offset.
type magic struct {
	offset int
	sig    string
	typ    string
}

var magics = []magic{
	{0, "\xff\xd8\xff", "image/jpeg"},
	{0, "\x89PNG\r\n\x1a\n", "image/png"},
	{0, "GIF87a", "image/gif"},
	{0, "GIF89a", "image/gif"},
	{0, "\x1a\x45\xdf\xa3", "video/webm"},
	{0, "OggS", "audio/ogg"},
	{0, "fLaC", "audio/flac"},
	{0, "ID3", "audio/mpeg"},
	{0, "%PDF-", "application/pdf"},
	{0, "II*\x00", "image/tiff"},
	{0, "MM\x00*", "image/tiff"},
	{0, "\x00\x00\x01\xba", "video/mpeg"},
	{0, "\x00\x00\x01\xb3", "video/mpeg"},
	{0, "PK\x03\x04", "application/zip"},
	{0, "\x1f\x8b", "application/gzip"},
}

// Sniff returns the type of the recognised binary format that head (the
// first bytes of a blob) starts with, or "".
func Sniff(head []byte) string {
	if len(head) >= 12 && string(head[4:8]) == "ftyp" {
		return ftypType(string(head[8:12]))
	}
	if len(head) >= 12 && string(head[0:4]) == "RIFF" {
		switch string(head[8:12]) {
		case "WEBP":
			return "image/webp"
		case "WAVE":
			return "audio/wav"
		case "AVI ":
			return "video/x-msvideo"
		}
		return ""
	}
	for _, m := range magics {
		if len(head) >= m.offset+len(m.sig) && bytes.Equal(head[m.offset:m.offset+len(m.sig)], []byte(m.sig)) {
			return m.typ
		}
	}
	// An MPEG audio frame header without an ID3 tag.
	if len(head) >= 2 && head[0] == 0xff && head[1]&0xe0 == 0xe0 && head[1]&0x06 != 0 {
		return "audio/mpeg"
	}
	return ""
}

// ftypType maps the major brand of an ISO base media file to its type.
func ftypType(brand string) string {
	switch brand {
	case "avif", "avis":
		return "image/avif"
	case "heic", "heix", "heim", "heis", "hevc", "hevx":
		return "image/heic"
	case "mif1", "msf1":
		return "image/heif"
	case "qt  ":
		return "video/quicktime"
	case "M4A ", "M4B ":
		return "audio/mp4"
	case "M4V ", "M4VH", "M4VP":
		return "video/x-m4v"
	case "3gp4", "3gp5", "3gp6", "3gg6", "3ge6":
		return "video/3gpp"
	case "3g2a", "3g2b", "3g2c":
		return "video/3gpp2"
	}
	return "video/mp4"
}

// families are the groups of types that describe the same container, any
// of which a client may reasonably declare for bytes sniffed as another.
var families = [][]string{
	{"image/jpeg", "image/jpg", "image/pjpeg"},
	{"image/tiff", "image/tif"},
	{"video/mp4", "video/quicktime", "video/x-m4v", "video/3gpp", "video/3gpp2",
		"audio/mp4", "audio/x-m4a", "audio/m4a", "audio/aac", "image/heic", "image/heif",
		"image/heic-sequence", "image/heif-sequence", "image/avif", "image/avif-sequence"},
	{"video/webm", "audio/webm", "video/x-matroska", "audio/x-matroska"},
	{"audio/ogg", "video/ogg", "application/ogg", "audio/opus"},
	{"audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave"},
	{"audio/mpeg", "audio/mp3", "audio/mpeg3", "audio/x-mpeg"},
	{"audio/flac", "audio/x-flac"},
	{"video/mpeg", "video/mp2t"},
	{"application/zip", "application/x-zip-compressed"},
	{"application/gzip", "application/x-gzip"},
}

var familyOf = func() map[string]int {
	m := map[string]int{}
	for i, f := range families {
		for _, t := range f {
			m[t] = i
		}
	}
	return m
}()

// sniffable are the types Sniff can recognise: a blob declared as one of
// them but not recognised is not what it claims to be.
var sniffable = func() map[string]bool {
	m := map[string]bool{"image/png": true, "image/gif": true, "image/webp": true, "application/pdf": true, "video/x-msvideo": true}
	for _, f := range families {
		for _, t := range f {
			m[t] = true
		}
	}
	// Variants that Sniff does not tell apart from other formats.
	delete(m, "audio/aac")
	delete(m, "video/mp2t")
	return m
}()

func compatible(declared, sniffed string) bool {
	if declared == sniffed {
		return true
	}
	a, ok1 := familyOf[declared]
	b, ok2 := familyOf[sniffed]
	return ok1 && ok2 && a == b
}

// safeTypes are the non-media types that may be stored as declared: data
// formats a browser shows as text or offers as a download, never runs.
var safeTypes = map[string]bool{
	"text/plain":        true,
	"text/csv":          true,
	"text/markdown":     true,
	"text/vtt":          true,
	"application/json":  true,
	"application/pdf":   true,
	"application/zip":   true,
	"application/gzip":  true,
	"application/ogg":   true,
	"application/cbor":  true,
	"application/x-tar": true,
	OctetStream:         true,
}

// Safe reports whether a blob may be stored and served with type t: image,
// video and audio types except those that can carry markup or script
// (SVG, anything XML-based), and an allowlist of plain data types.
func Safe(t string) bool {
	if safeTypes[t] {
		return true
	}
	main, sub, _ := strings.Cut(t, "/")
	if strings.Contains(sub, "xml") || strings.Contains(sub, "svg") || strings.Contains(sub, "html") || strings.Contains(sub, "script") {
		return false
	}
	switch main {
	case "image", "video", "audio":
		return isToken(sub)
	}
	return false
}

// isToken reports whether s is a MIME subtype made of token characters.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
		case strings.ContainsRune("!#$&-^_.+", r):
		default:
			return false
		}
	}
	return true
}
