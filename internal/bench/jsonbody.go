package bench

import (
	"strconv"
	"time"

	"stratus/internal/atjson"
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

// appendPost appends the post record that the write scenarios create, as
// JSON: {"$type", "createdAt", "text"}.
func appendPost(dst []byte, scenario string, i int, createdAt time.Time) []byte {
	dst = append(dst, `{"$type":`...)
	dst = atjson.AppendString(dst, PostCollection)
	dst = append(dst, `,"createdAt":"`...)
	dst = createdAt.UTC().AppendFormat(dst, createdAtLayout)
	dst = append(dst, `","text":`...)
	dst = atjson.AppendString(dst, postText(scenario, i))
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
	dst = atjson.AppendString(dst, PostCollection)
	dst = append(dst, `,"record":`...)
	dst = appendPost(dst, scenario, i, createdAt)
	dst = append(dst, `,"repo":`...)
	dst = atjson.AppendString(dst, repo)
	return append(dst, '}')
}

// applyWritesBody is applyWrites' body creating posts first to
// first+n-1 of a scenario, all created at the same time: {"repo",
// "writes": [{"$type", "collection", "value"}, ...]}.
func applyWritesBody(repo, scenario string, first, n int, createdAt time.Time) []byte {
	dst := make([]byte, 0, 32+len(repo)+n*(192+len(scenario)))
	dst = append(dst, `{"repo":`...)
	dst = atjson.AppendString(dst, repo)
	dst = append(dst, `,"writes":[`...)
	for i := range n {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"$type":"com.atproto.repo.applyWrites#create","collection":`...)
		dst = atjson.AppendString(dst, PostCollection)
		dst = append(dst, `,"value":`...)
		dst = appendPost(dst, scenario, first+i, createdAt)
		dst = append(dst, '}')
	}
	return append(dst, "]}"...)
}
