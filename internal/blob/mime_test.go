package blob_test

import (
	"strings"
	"testing"

	"stratus/internal/blob"
)

// Leading bytes of real files of each format.
var (
	pngHead  = "\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"
	jpegHead = "\xff\xd8\xff\xe0\x00\x10JFIF\x00"
	gifHead  = "GIF89a\x01\x00\x01\x00"
	webpHead = "RIFF\x24\x00\x00\x00WEBPVP8 "
	mp4Head  = "\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00"
	movHead  = "\x00\x00\x00\x14ftypqt  \x00\x00\x00\x00"
	heicHead = "\x00\x00\x00\x18ftypheic\x00\x00\x00\x00"
	avifHead = "\x00\x00\x00\x1cftypavif\x00\x00\x00\x00"
	webmHead = "\x1a\x45\xdf\xa3\x9f\x42\x86\x81"
	htmlBody = "<!DOCTYPE html><html><script>alert(document.cookie)</script></html>"
	svgBody  = `<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>`
)

func TestContentType(t *testing.T) {
	for _, tc := range []struct {
		name, declared, head, want string
	}{
		// Missing or generic types are sniffed.
		{"png undeclared", "", pngHead, "image/png"},
		{"jpeg as */*", "*/*", jpegHead, "image/jpeg"},
		{"gif as octet-stream", "application/octet-stream", gifHead, "image/gif"},
		{"webp as image/*", "image/*", webpHead, "image/webp"},
		{"mp4 undeclared", "", mp4Head, "video/mp4"},
		{"quicktime undeclared", "", movHead, "video/quicktime"},
		{"heic undeclared", "", heicHead, "image/heic"},
		{"avif undeclared", "", avifHead, "image/avif"},
		{"webm undeclared", "", webmHead, "video/webm"},
		{"unknown bytes undeclared", "", "just some bytes", blob.OctetStream},
		{"malformed declared", "image/", pngHead, "image/png"},
		{"garbage declared", ";;;", "just some bytes", blob.OctetStream},
		{"empty body", "", "", blob.OctetStream},

		// A specific declared type is kept when consistent.
		{"png as png", "image/png", pngHead, "image/png"},
		{"params stripped, lowercased", "IMAGE/PNG; charset=binary", pngHead, "image/png"},
		{"jpg alias", "image/jpg", jpegHead, "image/jpg"},
		{"mp4 declared quicktime", "video/quicktime", mp4Head, "video/quicktime"},
		{"heic declared for ftyp heic", "image/heic", heicHead, "image/heic"},
		{"matroska declared for webm", "video/x-matroska", webmHead, "video/x-matroska"},
		{"text kept", "text/plain", "hello", "text/plain"},
		{"json kept", "application/json", `{"a":1}`, "application/json"},
		{"audio kept", "audio/aac", "\xff\xf1\x50\x80", "audio/aac"},

		// Inconsistent declarations: the bytes win.
		{"png declared jpeg", "image/jpeg", pngHead, "image/png"},
		{"mp4 declared png", "image/png", mp4Head, "video/mp4"},
		{"png declared text", "text/plain", pngHead, "image/png"},
		{"not a png", "image/png", "definitely not a png", blob.OctetStream},
		{"not a jpeg", "image/jpeg", htmlBody, blob.OctetStream},

		// Types that could run in the server's origin are never stored.
		{"html", "text/html", htmlBody, blob.OctetStream},
		{"html with charset", "text/html; charset=utf-8", htmlBody, blob.OctetStream},
		{"xhtml", "application/xhtml+xml", htmlBody, blob.OctetStream},
		{"svg", "image/svg+xml", svgBody, blob.OctetStream},
		{"javascript", "text/javascript", "alert(1)", blob.OctetStream},
		{"app javascript", "application/javascript", "alert(1)", blob.OctetStream},
		{"xml", "text/xml", "<a/>", blob.OctetStream},
		{"xslt", "application/xslt+xml", "<a/>", blob.OctetStream},
		{"flash", "application/x-shockwave-flash", "FWS", blob.OctetStream},
		{"unknown application type", "application/x-whatever", "data", blob.OctetStream},
		{"multipart", "multipart/form-data; boundary=x", "data", blob.OctetStream},
		{"html undeclared", "", htmlBody, blob.OctetStream},
		{"css", "text/css", "body{}", blob.OctetStream},
		{"html as plain text", "text/plain", htmlBody, "text/plain"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := blob.ContentType(tc.declared, []byte(tc.head)); got != tc.want {
				t.Errorf("ContentType(%q, %q) = %q, want %q", tc.declared, tc.head, got, tc.want)
			}
		})
	}
}

// FuzzContentType checks that no declared type and bytes, both chosen by
// the uploader, yield an unsafe or malformed stored type.
func FuzzContentType(f *testing.F) {
	for _, seed := range [][2]string{
		{"", pngHead}, {"image/png", pngHead}, {"text/html", htmlBody}, {"image/svg+xml", svgBody},
		{"video/mp4", mp4Head}, {"*/*", "x"}, {"a/b; c=d", ""}, {"image/png\x00", pngHead},
	} {
		f.Add(seed[0], []byte(seed[1]))
	}
	f.Fuzz(func(t *testing.T, declared string, head []byte) {
		got := blob.ContentType(declared, head)
		if !blob.Safe(got) {
			t.Fatalf("ContentType(%q, %q) = %q, which is not safe", declared, head, got)
		}
		main, sub, ok := strings.Cut(got, "/")
		if !ok || main == "" || sub == "" || strings.ContainsAny(got, " ;\"\r\n\x00") || got != strings.ToLower(got) {
			t.Fatalf("ContentType(%q, %q) = %q, not a bare lowercase type", declared, head, got)
		}
	})
}
