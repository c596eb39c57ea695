package server_test

import (
	"net/http"
	"strings"
	"testing"

	"stratus/internal/pdstest"
)

// routes lists every XRPC method of internal/xrpc/routes.go with its verb.
var routes = []struct {
	nsid, method string
}{
	{describeServer, get},
	{activateAccount, post},
	{deactivateAccount, post},
	{checkAccountStatus, get},
	{resolveHandle, get},
	{createRecord, post},
	{putRecord, post},
	{deleteRecord, post},
	{applyWrites, post},
	{getRecord, get},
	{listRecords, get},
	{describeRepo, get},
	{getRepo, get},
	{getLatestCommit, get},
	{getRepoStatus, get},
	{listRepos, get},
	{getBlocks, get},
	{syncGetRecord, get},
}

// TestGarbageInputs sends malformed bodies to every procedure and malformed
// query strings to every query: the server must answer each with a client
// error in an XRPC envelope (or, where the input happens to be acceptable,
// a success), never a 5xx.
func TestGarbageInputs(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t)
	tok := s.AdminToken()
	did := s.DID()
	s.CreateRecord(t, unknownColl, "exists", thing(1))

	deep := strings.Repeat("[", 100_000) + strings.Repeat("]", 100_000)
	deepObj := strings.Repeat(`{"a":`, 5000) + "1" + strings.Repeat("}", 5000)
	// refuse says which procedures must refuse the body: all the
	// repository writes, only the record writers (for bad record data), or
	// none (data the data model allows, or a valid delete).
	const (
		allWrites = iota
		recordWriters
		mayAccept
	)
	bodies := []struct {
		name, body string
		refuse     int
	}{
		{"empty", ``, allWrites},
		{"whitespace", "  \n\t ", allWrites},
		{"truncated", `{"repo":"` + did, allWrites},
		{"null", `null`, allWrites},
		{"true", `true`, allWrites},
		{"number", `12345678901234567890123`, allWrites},
		{"string", `"text"`, allWrites},
		{"array", `[1,2,3]`, allWrites},
		{"empty object", `{}`, allWrites},
		{"two objects", `{}{}`, allWrites},
		{"invalid utf-8", "{\"repo\":\"\xff\xfe\"}", allWrites},
		{"nul bytes", "{\"repo\":\"a\u0000b\"}", allWrites},
		{"deep array", deep, allWrites},
		{"deep record", `{"repo":"` + did + `","collection":"` + unknownColl + `","rkey":"deep","record":` + deepObj + `}`, mayAccept},
		{"wrong types", `{"repo":1,"collection":[],"rkey":{},"record":"x","validate":"yes","swapCommit":7,"swapRecord":[],"writes":{}}`, allWrites},
		{"repo object", `{"repo":{"did":"` + did + `"}}`, allWrites},
		{"writes of garbage", `{"repo":"` + did + `","writes":[1,"x",null,[],{"$type":5}]}`, allWrites},
		{"write value garbage", `{"repo":"` + did + `","writes":[{"$type":"com.atproto.repo.applyWrites#create","collection":"` + unknownColl + `","value":[1]}]}`, allWrites},
		{"bad link", `{"repo":"` + did + `","collection":"` + unknownColl + `","rkey":"bad","record":{"l":{"$link":5}}}`, recordWriters},
		{"bad bytes", `{"repo":"` + did + `","collection":"` + unknownColl + `","rkey":"bad","record":{"b":{"$bytes":null}}}`, recordWriters},
		{"blob without ref", `{"repo":"` + did + `","collection":"` + unknownColl + `","rkey":"bad","record":{"b":{"$type":"blob","mimeType":"x","size":1}}}`, recordWriters},
		{"blob bad size", `{"repo":"` + did + `","collection":"` + unknownColl + `","rkey":"bad","record":{"b":{"$type":"blob","ref":{"$link":"bafkreibme22gw2h7y2h7tg2fhqotaqjucnbc24deqo72b6mkl2egezxhvy"},"mimeType":"x","size":-5}}}`, recordWriters},
		{"huge integer", `{"repo":"` + did + `","collection":"` + unknownColl + `","rkey":"bad","record":{"n":1e400}}`, recordWriters},
		{"empty key", `{"repo":"` + did + `","collection":"` + unknownColl + `","rkey":"bad","record":{"":1}}`, mayAccept},
		{"type in nested", `{"repo":"` + did + `","collection":"` + unknownColl + `","rkey":"bad","record":{"x":{"$type":7}}}`, recordWriters},
		{"swapCommit garbage", `{"repo":"` + did + `","collection":"` + unknownColl + `","rkey":"exists","record":{},"swapCommit":"bafy","swapRecord":"bafy"}`, allWrites},
		{"deleteAfter garbage", `{"deleteAfter":{"x":1}}`, allWrites},
		{"unknown fields only", `{"foo":"bar"}`, allWrites},
	}
	queries := []string{
		"",
		"did=",
		"did=garbage",
		"did=did:web:",
		"did=did:web:elsewhere.test",
		"did=" + did + "&since=notatid",
		"did=" + did + "&since=",
		"did=" + did + "&cids=",
		"did=" + did + "&cids=garbage",
		"did=" + did + "&cids=bafkreibme22gw2h7y2h7tg2fhqotaqjucnbc24deqo72b6mkl2egezxhvy",
		"did=" + did + "&collection=..&rkey=..",
		"did=" + did + "&collection=" + unknownColl + "&rkey=a%2Fb",
		"did=" + did + "&collection=" + unknownColl + "&rkey=missing",
		"repo=",
		"repo=garbage%20value",
		"repo=bob.test",
		"repo=did:plc:aaaaaaaaaaaaaaaaaaaaaaaa",
		"repo=" + did + "&collection=nope",
		"repo=" + did + "&collection=" + unknownColl + "&rkey=",
		"repo=" + did + "&collection=" + unknownColl + "&rkey=..",
		"repo=" + did + "&collection=" + unknownColl + "&rkey=exists&cid=garbage",
		"repo=" + did + "&collection=" + unknownColl + "&limit=abc",
		"repo=" + did + "&collection=" + unknownColl + "&limit=-1",
		"repo=" + did + "&collection=" + unknownColl + "&limit=99999999999999999999999",
		"repo=" + did + "&collection=" + unknownColl + "&reverse=maybe",
		"repo=" + did + "&collection=" + unknownColl + "&cursor=%00%01",
		"repo=" + did + "&collection=" + unknownColl + "&cursor=..",
		"limit=0",
		"limit=1001",
		"limit=x&cursor=%ff",
		"cursor=" + strings.Repeat("z", 5000),
		"handle=",
		"handle=%ff%fe",
		"handle=" + strings.Repeat("a.", 200) + "test",
		"%zz=%zz",
		"a=1&a=2&did=" + did + "&did=garbage",
	}

	for _, r := range routes {
		t.Run(r.nsid, func(t *testing.T) {
			check := func(t *testing.T, status int, b []byte) {
				t.Helper()
				if status >= 500 {
					t.Fatalf("server error %d: %s", status, truncate(b))
				}
				if status == http.StatusOK {
					return
				}
				if _, err := pdstest.ParseError(b); err != nil {
					t.Errorf("status %d: %v", status, err)
				}
			}
			if r.method == post {
				for _, bc := range bodies {
					t.Run(bc.name, func(t *testing.T) {
						status, b := s.Do(t, post, r.nsid, nil, raw(bc.body), tok)
						check(t, status, b)
						mustRefuse := false
						switch r.nsid {
						case createRecord, putRecord:
							mustRefuse = bc.refuse != mayAccept
						case deleteRecord, applyWrites:
							mustRefuse = bc.refuse == allWrites
						}
						if status == http.StatusOK && mustRefuse {
							t.Errorf("garbage accepted: %s", truncate(b))
						}
						if r.nsid == deactivateAccount {
							s.Call(t, post, activateAccount, nil, nil, tok, nil)
						}
					})
				}
				return
			}
			for _, qs := range queries {
				for _, token := range []string{"", tok} {
					name := qs
					if token != "" {
						name += " (admin)"
					}
					t.Run(name, func(t *testing.T) {
						path := "/xrpc/" + r.nsid
						if qs != "" {
							path += "?" + qs
						}
						h := http.Header{}
						if token != "" {
							h.Set("Authorization", "Bearer "+token)
						}
						resp, b := s.Raw(t, get, path, h, nil)
						check(t, resp.StatusCode, b)
					})
				}
			}
		})
	}
	// The repository is intact after all of it.
	verifyFullRepo(t, s.DID(), s.SigningKey(), fetchRepo(t, s))
}
