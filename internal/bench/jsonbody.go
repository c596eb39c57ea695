package bench

import (
	"strconv"
	"time"
	"unicode/utf8"
)

// The bodies of the calls the write scenarios repeat are appended by hand
// rather than marshalled from maps: on one machine the load generator's CPU
// is taken from the server's, and encoding/json spends most of its time on
// reflection and sorting the map keys. The bytes are the same as
// json.Marshal writes for the maps they stand for (keys sorted, strings
// escaped the same way), which the tests check.

// createdAtLayout is the layout of a record's createdAt. It writes only
// digits and ASCII punctuation, which JSON strings carry unescaped.
const createdAtLayout = "2006-01-02T15:04:05.000Z"

// appendJSONString appends s as a JSON string escaped as encoding/json
// escapes it: quote and backslash by a backslash; \b \f \n \r \t; other
// control characters and the HTML-sensitive <, > and & as \u00XX; U+2028
// and U+2029 as \u2028 and \u2029; each byte of invalid UTF-8 as \ufffd.
func appendJSONString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0 // s[start:i] is pending, to be copied as it is
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' && b != '<' && b != '>' && b != '&' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '"', '\\':
				dst = append(dst, '\\', b)
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
				dst = append(dst, '\\', 'u', '0', '0', hex[b>>4], hex[b&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
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

// appendPost appends the post record that the write scenarios create, as
// JSON: {"$type", "createdAt", "text"}.
func appendPost(dst []byte, scenario string, i int, createdAt time.Time) []byte {
	dst = append(dst, `{"$type":`...)
	dst = appendJSONString(dst, PostCollection)
	dst = append(dst, `,"createdAt":"`...)
	dst = createdAt.UTC().AppendFormat(dst, createdAtLayout)
	dst = append(dst, `","text":`...)
	dst = appendJSONString(dst, postText(scenario, i))
	return append(dst, '}')
}

// postText is the text of the i-th post a scenario writes.
func postText(scenario string, i int) string {
	return "pds bench " + scenario + " " + strconv.Itoa(i)
}

// createPostBody is createRecord's body for the i-th post of a scenario:
// {"collection", "record", "repo"}.
func createPostBody(repo, scenario string, i int, createdAt time.Time) []byte {
	dst := make([]byte, 0, 192+len(repo)+len(scenario))
	dst = append(dst, `{"collection":`...)
	dst = appendJSONString(dst, PostCollection)
	dst = append(dst, `,"record":`...)
	dst = appendPost(dst, scenario, i, createdAt)
	dst = append(dst, `,"repo":`...)
	dst = appendJSONString(dst, repo)
	return append(dst, '}')
}

// applyWritesBody is applyWrites' body creating posts first to
// first+n-1 of a scenario, all created at the same time: {"repo",
// "writes": [{"$type", "collection", "value"}, ...]}.
func applyWritesBody(repo, scenario string, first, n int, createdAt time.Time) []byte {
	dst := make([]byte, 0, 32+len(repo)+n*(192+len(scenario)))
	dst = append(dst, `{"repo":`...)
	dst = appendJSONString(dst, repo)
	dst = append(dst, `,"writes":[`...)
	for i := range n {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"$type":"com.atproto.repo.applyWrites#create","collection":`...)
		dst = appendJSONString(dst, PostCollection)
		dst = append(dst, `,"value":`...)
		dst = appendPost(dst, scenario, first+i, createdAt)
		dst = append(dst, '}')
	}
	return append(dst, "]}"...)
}
