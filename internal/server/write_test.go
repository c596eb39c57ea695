package server_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"

	"stratus/internal/pdstest"
)

// checkWrite asserts the shape of a createRecord/putRecord answer that
// made a commit, and that the commit is now the repository head.
func checkWrite(t *testing.T, s *pdstest.Server, b []byte, coll, validation string) writeOut {
	t.Helper()
	var w writeOut
	decode(t, b, &w)
	u, err := syntax.ParseATURI(w.URI)
	if err != nil {
		t.Fatalf("uri %q: %v", w.URI, err)
	}
	if u.Authority().String() != s.DID() || u.Collection().String() != coll {
		t.Errorf("uri %q, want at://%s/%s/...", w.URI, s.DID(), coll)
	}
	if _, err := cid.Decode(w.CID); err != nil {
		t.Errorf("cid %q: %v", w.CID, err)
	}
	if w.Commit == nil {
		t.Fatalf("no commit in %s", b)
	}
	if _, err := syntax.ParseTID(w.Commit.Rev); err != nil {
		t.Errorf("commit rev %q: %v", w.Commit.Rev, err)
	}
	if h := head(t, s); h != *w.Commit {
		t.Errorf("commit %+v is not the head %+v", *w.Commit, h)
	}
	var fields map[string]json.RawMessage
	decode(t, b, &fields)
	if validation == "" {
		if v, ok := fields["validationStatus"]; ok {
			t.Errorf("validationStatus = %s, want absent", v)
		}
	} else if w.ValidationStatus != validation {
		t.Errorf("validationStatus = %q, want %q", w.ValidationStatus, validation)
	}
	return w
}

func TestCreateRecord(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t)
	tok := s.AdminToken()
	in := func(coll string, rec any, extra ...any) obj {
		o := obj{"repo": s.DID(), "collection": coll, "record": rec}
		for i := 0; i+1 < len(extra); i += 2 {
			o[extra[i].(string)] = extra[i+1]
		}
		return o
	}

	t.Run("success shapes", func(t *testing.T) {
		for _, tc := range []struct {
			name, coll string
			body       obj
			validation string
		}{
			{"known type is validated", postColl, in(postColl, pdstest.Post("hi")), "valid"},
			{"$type filled in", postColl, in(postColl, obj{"text": "no type", "createdAt": "2026-01-01T00:00:00Z"}), "valid"},
			{"unknown type", unknownColl, in(unknownColl, thing(1)), "unknown"},
			{"validate false", postColl, in(postColl, pdstest.Post("unchecked"), "validate", false), ""},
			{"validate false unknown", unknownColl, in(unknownColl, thing(2), "validate", false), ""},
			{"validate true known", postColl, in(postColl, pdstest.Post("checked"), "validate", true), "valid"},
			{"repo by handle", unknownColl, obj{"repo": s.Handle(), "collection": unknownColl, "record": thing(3)}, "unknown"},
			{"explicit rkey", unknownColl, in(unknownColl, thing(4), "rkey", "explicit-key_1.x:y~z"), "unknown"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				status, b := s.Do(t, post, createRecord, nil, tc.body, tok)
				if status != http.StatusOK {
					t.Fatalf("status %d: %s", status, b)
				}
				w := checkWrite(t, s, b, tc.coll, tc.validation)
				if rk, ok := tc.body["rkey"]; ok && w.RKey() != rk {
					t.Errorf("rkey %q, want %q", w.RKey(), rk)
				}
				var got record
				s.Call(t, get, getRecord, q("repo", s.DID(), "collection", tc.coll, "rkey", w.RKey()), nil, "", &got)
				if got.CID != w.CID || got.URI != w.URI {
					t.Errorf("getRecord = %s %s, want %s %s", got.URI, got.CID, w.URI, w.CID)
				}
				if got.Value["$type"] != tc.coll {
					t.Errorf("stored $type = %v, want %s", got.Value["$type"], tc.coll)
				}
			})
		}
	})

	t.Run("auto rkeys are increasing TIDs", func(t *testing.T) {
		var prev string
		for i := 0; i < 5; i++ {
			w := s.CreateRecord(t, unknownColl, "", thing(i))
			if _, err := syntax.ParseTID(w.RKey()); err != nil {
				t.Fatalf("rkey %q is not a TID: %v", w.RKey(), err)
			}
			if w.RKey() <= prev {
				t.Errorf("rkey %q not after %q", w.RKey(), prev)
			}
			prev = w.RKey()
		}
	})

	t.Run("profile self", func(t *testing.T) {
		profile := obj{"$type": profileColl, "displayName": "Alice"}
		status, b := s.Do(t, post, createRecord, nil, in(profileColl, profile, "rkey", "self"), tok)
		if status != http.StatusOK {
			t.Fatalf("status %d: %s", status, b)
		}
		checkWrite(t, s, b, profileColl, "valid")

		status, b = s.Do(t, post, createRecord, nil, in(profileColl, profile), tok)
		pdstest.MustError(t, status, b, http.StatusBadRequest, "InvalidRecord")
		status, b = s.Do(t, post, createRecord, nil, in(profileColl, profile, "rkey", "other"), tok)
		pdstest.MustError(t, status, b, http.StatusBadRequest, "InvalidRecord")
	})

	t.Run("duplicate", func(t *testing.T) {
		s.CreateRecord(t, unknownColl, "dup", thing(1))
		before := head(t, s)
		status, b := s.Do(t, post, createRecord, nil, in(unknownColl, thing(2), "rkey", "dup"), tok)
		pdstest.MustError(t, status, b, http.StatusConflict, "RecordAlreadyExists")
		if after := head(t, s); after != before {
			t.Errorf("head moved on a refused write")
		}
	})

	t.Run("swapCommit", func(t *testing.T) {
		h := head(t, s)
		stale := h.CID
		s.CreateRecord(t, unknownColl, "", thing(1))
		status, b := s.Do(t, post, createRecord, nil, in(unknownColl, thing(2), "swapCommit", stale), tok)
		pdstest.MustError(t, status, b, http.StatusBadRequest, "InvalidSwap")

		cur := head(t, s)
		status, b = s.Do(t, post, createRecord, nil, in(unknownColl, thing(3), "swapCommit", cur.CID), tok)
		if status != http.StatusOK {
			t.Fatalf("matching swapCommit: %d %s", status, b)
		}
		status, b = s.Do(t, post, createRecord, nil, in(unknownColl, thing(4), "swapCommit", "not-a-cid"), tok)
		pdstest.MustError(t, status, b, http.StatusBadRequest, "InvalidRequest")
	})

	t.Run("refused records", func(t *testing.T) {
		big := strings.Repeat("x", 300_000)
		huge := strings.Repeat("y", 1_100_000)
		for _, tc := range []struct {
			name    string
			body    any
			status  int
			err     string
			message string // substring of the message, if set
		}{
			{"validate true on unknown collection", in(unknownColl, thing(1), "validate", true), 400, "InvalidRecord", ""},
			{"validate as string", raw(`{"repo":"` + s.DID() + `","collection":"` + postColl + `","validate":"true","record":{"text":"x","createdAt":"2026-01-01T00:00:00Z"}}`), 400, "InvalidRequest", "validate"},
			{"$type mismatch", in(postColl, obj{"$type": "app.bsky.feed.like", "text": "x", "createdAt": "2026-01-01T00:00:00Z"}), 400, "InvalidRecord", ""},
			{"$type mismatch unvalidated", in(unknownColl, obj{"$type": "com.example.other"}, "validate", false), 400, "InvalidRecord", ""},
			{"$type not a string", in(unknownColl, obj{"$type": 7}), 400, "InvalidRecord", ""},
			{"$type null", in(unknownColl, obj{"$type": nil}), 400, "InvalidRecord", ""},
			{"lexicon violation", in(postColl, obj{"text": "no createdAt"}), 400, "InvalidRecord", ""},
			{"float", raw(`{"repo":"` + s.DID() + `","collection":"` + unknownColl + `","record":{"n":1.5}}`), 400, "", ""},
			{"float unvalidated", raw(`{"repo":"` + s.DID() + `","collection":"` + unknownColl + `","validate":false,"record":{"n":0.25}}`), 400, "", ""},
			{"legacy blob", in(unknownColl, obj{"img": obj{"cid": "bafkreibme22gw2h7y2h7tg2fhqotaqjucnbc24deqo72b6mkl2egezxhvy", "mimeType": "image/png"}}), 400, "", ""},
			{"legacy blob unvalidated", in(unknownColl, obj{"img": obj{"cid": "bafkreibme22gw2h7y2h7tg2fhqotaqjucnbc24deqo72b6mkl2egezxhvy", "mimeType": "image/png"}}, "validate", false), 400, "", ""},
			{"bad $link", in(unknownColl, obj{"l": obj{"$link": "nope"}}), 400, "", ""},
			{"bad $bytes", in(unknownColl, obj{"b": obj{"$bytes": "!!!"}}), 400, "", ""},
			{"record over 1 MiB in several fields", in(unknownColl, obj{"a": big, "b": big, "c": big, "d": big}), 400, "InvalidRecord", ""},
			{"record over 1 MiB in one string", in(unknownColl, obj{"a": huge}), 400, "", ""},
			{"record over 2 MiB JSON", in(unknownColl, obj{"a": huge, "b": huge}), 400, "", ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				before := head(t, s)
				status, b := s.Do(t, post, createRecord, nil, tc.body, tok)
				env := pdstest.MustError(t, status, b, tc.status, tc.err)
				if tc.message != "" && !contains(env.Message, tc.message) {
					t.Errorf("message %q does not mention %q", env.Message, tc.message)
				}
				if after := head(t, s); after != before {
					t.Errorf("head moved on a refused write")
				}
			})
		}
	})
}

func TestPutRecord(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t)
	tok := s.AdminToken()
	put := func(rkey string, rec any, extra ...any) (int, []byte) {
		t.Helper()
		o := obj{"repo": s.DID(), "collection": unknownColl, "rkey": rkey, "record": rec}
		for i := 0; i+1 < len(extra); i += 2 {
			o[extra[i].(string)] = extra[i+1]
		}
		return s.Do(t, post, putRecord, nil, o, tok)
	}

	var first writeOut
	t.Run("creates", func(t *testing.T) {
		status, b := put("p1", thing(1))
		if status != http.StatusOK {
			t.Fatalf("status %d: %s", status, b)
		}
		first = checkWrite(t, s, b, unknownColl, "unknown")
	})
	t.Run("updates", func(t *testing.T) {
		status, b := put("p1", thing(2))
		if status != http.StatusOK {
			t.Fatalf("status %d: %s", status, b)
		}
		w := checkWrite(t, s, b, unknownColl, "unknown")
		if w.CID == first.CID || w.URI != first.URI {
			t.Errorf("update gave %s %s after %s %s", w.URI, w.CID, first.URI, first.CID)
		}
		var got record
		s.Call(t, get, getRecord, q("repo", s.DID(), "collection", unknownColl, "rkey", "p1"), nil, "", &got)
		if got.CID != w.CID || got.Value["n"] != float64(2) {
			t.Errorf("getRecord = %+v", got)
		}
	})
	t.Run("identical contents accepted", func(t *testing.T) {
		before := head(t, s)
		status, b := put("p1", thing(2))
		if status != http.StatusOK {
			t.Fatalf("status %d: %s", status, b)
		}
		var w writeOut
		decode(t, b, &w)
		var got record
		s.Call(t, get, getRecord, q("repo", s.DID(), "collection", unknownColl, "rkey", "p1"), nil, "", &got)
		if w.CID != got.CID {
			t.Errorf("cid %s, stored %s", w.CID, got.CID)
		}
		after := head(t, s)
		if w.Commit != nil && *w.Commit != after {
			t.Errorf("answer names commit %+v, head is %+v", *w.Commit, after)
		}
		if w.Commit == nil && after != before {
			t.Errorf("head moved without a commit in the answer")
		}
	})
	t.Run("validate false", func(t *testing.T) {
		status, b := s.Do(t, post, putRecord, nil, obj{"repo": s.DID(), "collection": postColl, "rkey": "p2", "validate": false, "record": pdstest.Post("x")}, tok)
		if status != http.StatusOK {
			t.Fatalf("status %d: %s", status, b)
		}
		checkWrite(t, s, b, postColl, "")
	})
	t.Run("swapRecord", func(t *testing.T) {
		var cur record
		s.Call(t, get, getRecord, q("repo", s.DID(), "collection", unknownColl, "rkey", "p1"), nil, "", &cur)
		for _, tc := range []struct {
			name   string
			rkey   string
			swap   any
			status int
			err    string
		}{
			{"mismatch", "p1", first.CID, 400, "InvalidSwap"},
			{"null on existing", "p1", nil, 400, "InvalidSwap"},
			{"cid on missing", "p-missing", cur.CID, 400, "InvalidSwap"},
			{"not a cid", "p1", "zzz", 400, "InvalidRequest"},
			{"not a string", "p1", 5, 400, "InvalidRequest"},
			{"match", "p1", cur.CID, 200, ""},
			{"null on missing", "p-new", nil, 200, ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				before := head(t, s)
				status, b := put(tc.rkey, thing(100), "swapRecord", tc.swap)
				if tc.status == http.StatusOK {
					if status != http.StatusOK {
						t.Fatalf("status %d: %s", status, b)
					}
					return
				}
				pdstest.MustError(t, status, b, tc.status, tc.err)
				if head(t, s) != before {
					t.Errorf("head moved on a refused write")
				}
			})
		}
	})
	t.Run("missing rkey", func(t *testing.T) {
		status, b := s.Do(t, post, putRecord, nil, obj{"repo": s.DID(), "collection": unknownColl, "record": thing(1)}, tok)
		pdstest.MustError(t, status, b, http.StatusBadRequest, "InvalidRequest")
	})
	t.Run("profile needs self", func(t *testing.T) {
		status, b := s.Do(t, post, putRecord, nil, obj{"repo": s.DID(), "collection": profileColl, "rkey": "notself", "record": obj{"displayName": "A"}}, tok)
		pdstest.MustError(t, status, b, http.StatusBadRequest, "InvalidRecord")
		status, b = s.Do(t, post, putRecord, nil, obj{"repo": s.DID(), "collection": profileColl, "rkey": "self", "record": obj{"displayName": "A"}}, tok)
		if status != http.StatusOK {
			t.Fatalf("status %d: %s", status, b)
		}
		checkWrite(t, s, b, profileColl, "valid")
	})
}

func TestDeleteRecord(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t)
	tok := s.AdminToken()
	del := func(rkey string, extra ...any) (int, []byte) {
		t.Helper()
		o := obj{"repo": s.DID(), "collection": unknownColl, "rkey": rkey}
		for i := 0; i+1 < len(extra); i += 2 {
			o[extra[i].(string)] = extra[i+1]
		}
		return s.Do(t, post, deleteRecord, nil, o, tok)
	}

	t.Run("existing", func(t *testing.T) {
		s.CreateRecord(t, unknownColl, "d1", thing(1))
		status, b := del("d1")
		if status != http.StatusOK {
			t.Fatalf("status %d: %s", status, b)
		}
		var out struct{ Commit *pdstest.CommitMeta }
		decode(t, b, &out)
		if out.Commit == nil || *out.Commit != head(t, s) {
			t.Errorf("commit %+v is not the head", out.Commit)
		}
		status, b = s.Do(t, get, getRecord, q("repo", s.DID(), "collection", unknownColl, "rkey", "d1"), nil, "")
		pdstest.MustError(t, status, b, http.StatusBadRequest, "RecordNotFound")
	})
	t.Run("missing is a no-op", func(t *testing.T) {
		before := head(t, s)
		status, b := del("never-existed")
		if status != http.StatusOK || strings.TrimSpace(string(b)) != "{}" {
			t.Errorf("got %d %s, want 200 {}", status, b)
		}
		if head(t, s) != before {
			t.Errorf("head moved")
		}
	})
	t.Run("swaps", func(t *testing.T) {
		w := s.CreateRecord(t, unknownColl, "d2", thing(2))
		other := s.CreateRecord(t, unknownColl, "d3", thing(3))
		for _, tc := range []struct {
			name  string
			rkey  string
			extra []any
			err   string
		}{
			{"swapRecord mismatch", "d2", []any{"swapRecord", other.CID}, "InvalidSwap"},
			{"swapRecord on missing", "missing", []any{"swapRecord", w.CID}, "InvalidSwap"},
			{"swapCommit mismatch", "d2", []any{"swapCommit", w.Commit.CID}, "InvalidSwap"},
			{"swapRecord not a cid", "d2", []any{"swapRecord", "x"}, "InvalidRequest"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				before := head(t, s)
				status, b := del(tc.rkey, tc.extra...)
				pdstest.MustError(t, status, b, http.StatusBadRequest, tc.err)
				if head(t, s) != before {
					t.Errorf("head moved")
				}
			})
		}
		status, b := del("d2", "swapRecord", w.CID, "swapCommit", head(t, s).CID)
		if status != http.StatusOK {
			t.Errorf("matching swaps: %d %s", status, b)
		}
	})
}

// applyOut is the answer of applyWrites.
type applyOut struct {
	Commit  *pdstest.CommitMeta `json:"commit"`
	Results []struct {
		Type             string `json:"$type"`
		URI              string `json:"uri"`
		CID              string `json:"cid"`
		ValidationStatus string `json:"validationStatus"`
	} `json:"results"`
}

const (
	awCreate = "com.atproto.repo.applyWrites#create"
	awUpdate = "com.atproto.repo.applyWrites#update"
	awDelete = "com.atproto.repo.applyWrites#delete"
)

func TestApplyWrites(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t)
	tok := s.AdminToken()
	apply := func(writes []obj, extra ...any) (int, []byte) {
		t.Helper()
		o := obj{"repo": s.DID(), "writes": writes}
		for i := 0; i+1 < len(extra); i += 2 {
			o[extra[i].(string)] = extra[i+1]
		}
		return s.Do(t, post, applyWrites, nil, o, tok)
	}
	exists := func(coll, rkey string) bool {
		t.Helper()
		status, b := s.Do(t, get, getRecord, q("repo", s.DID(), "collection", coll, "rkey", rkey), nil, "")
		if status == http.StatusOK {
			return true
		}
		pdstest.MustError(t, status, b, http.StatusBadRequest, "RecordNotFound")
		return false
	}

	t.Run("mixed batch", func(t *testing.T) {
		s.CreateRecord(t, unknownColl, "u1", thing(1))
		s.CreateRecord(t, unknownColl, "x1", thing(2))
		status, b := apply([]obj{
			{"$type": awCreate, "collection": postColl, "value": pdstest.Post("batch")},
			{"$type": awCreate, "collection": unknownColl, "rkey": "c1", "value": thing(3)},
			{"$type": awUpdate, "collection": unknownColl, "rkey": "u1", "value": thing(4)},
			{"$type": awDelete, "collection": unknownColl, "rkey": "x1"},
		})
		if status != http.StatusOK {
			t.Fatalf("status %d: %s", status, b)
		}
		var out applyOut
		decode(t, b, &out)
		if out.Commit == nil || *out.Commit != head(t, s) {
			t.Errorf("commit %+v is not the head", out.Commit)
		}
		wantTypes := []string{
			"com.atproto.repo.applyWrites#createResult",
			"com.atproto.repo.applyWrites#createResult",
			"com.atproto.repo.applyWrites#updateResult",
			"com.atproto.repo.applyWrites#deleteResult",
		}
		wantStatus := []string{"valid", "unknown", "unknown", ""}
		if len(out.Results) != len(wantTypes) {
			t.Fatalf("%d results, want %d: %s", len(out.Results), len(wantTypes), b)
		}
		for i, r := range out.Results {
			if r.Type != wantTypes[i] {
				t.Errorf("result %d $type %q, want %q", i, r.Type, wantTypes[i])
			}
			if r.ValidationStatus != wantStatus[i] {
				t.Errorf("result %d validationStatus %q, want %q", i, r.ValidationStatus, wantStatus[i])
			}
			if i < 3 && (r.URI == "" || r.CID == "") {
				t.Errorf("result %d lacks uri/cid: %+v", i, r)
			}
			if i == 3 && (r.URI != "" || r.CID != "") {
				t.Errorf("delete result has uri/cid: %+v", r)
			}
		}
		if _, err := syntax.ParseTID(strings.TrimPrefix(out.Results[0].URI, "at://"+s.DID()+"/"+postColl+"/")); err != nil {
			t.Errorf("auto rkey of %s is not a TID", out.Results[0].URI)
		}
		if !exists(unknownColl, "c1") || exists(unknownColl, "x1") {
			t.Errorf("batch not applied")
		}
	})

	t.Run("validate false results", func(t *testing.T) {
		status, b := apply([]obj{{"$type": awCreate, "collection": postColl, "value": pdstest.Post("x")}}, "validate", false)
		if status != http.StatusOK {
			t.Fatalf("status %d: %s", status, b)
		}
		if strings.Contains(string(b), "validationStatus") {
			t.Errorf("validationStatus present with validate:false: %s", b)
		}
	})

	t.Run("200 writes", func(t *testing.T) {
		writes := make([]obj, 200)
		for i := range writes {
			writes[i] = obj{"$type": awCreate, "collection": "com.example.many", "value": obj{"i": i}}
		}
		status, b := apply(writes)
		if status != http.StatusOK {
			t.Fatalf("status %d: %s", status, truncate(b))
		}
	})

	t.Run("201 writes", func(t *testing.T) {
		writes := make([]obj, 201)
		for i := range writes {
			writes[i] = obj{"$type": awCreate, "collection": unknownColl, "value": obj{"i": i}}
		}
		before := head(t, s)
		status, b := apply(writes)
		pdstest.MustError(t, status, b, http.StatusBadRequest, "InvalidRequest")
		if head(t, s) != before {
			t.Errorf("head moved")
		}
	})

	t.Run("commit too large", func(t *testing.T) {
		// Each record is small, the commit is over the 2 MB event limit.
		// The refused batch must leave the engine's tree as it was.
		before := head(t, s)
		beforeSnap := verifyFullRepo(t, s.DID(), s.SigningKey(), fetchRepo(t, s))
		pad := strings.Repeat("x", 11_000)
		writes := make([]obj, 200)
		for i := range writes {
			writes[i] = obj{"$type": awCreate, "collection": "com.example.bulky", "value": obj{"i": i, "pad": pad}}
		}
		status, b := apply(writes)
		pdstest.MustError(t, status, b, http.StatusBadRequest, "")
		if head(t, s) != before {
			t.Fatalf("head moved")
		}
		w := s.CreateRecord(t, unknownColl, "", thing(1))
		if w.Commit == nil {
			t.Fatalf("no commit")
		}
		snap := verifyFullRepo(t, s.DID(), s.SigningKey(), fetchRepo(t, s))
		if len(snap.records) != len(beforeSnap.records)+1 {
			t.Errorf("%d records after a refused batch and one create, want %d", len(snap.records), len(beforeSnap.records)+1)
		}
	})

	t.Run("all or nothing", func(t *testing.T) {
		s.CreateRecord(t, unknownColl, "taken", thing(1))
		for _, tc := range []struct {
			name   string
			second obj
			status int
			err    string
		}{
			{"invalid record", obj{"$type": awCreate, "collection": postColl, "value": obj{"text": 5}}, 400, "InvalidRecord"},
			{"update of missing", obj{"$type": awUpdate, "collection": unknownColl, "rkey": "absent", "value": thing(1)}, 400, "RecordNotFound"},
			{"delete of missing", obj{"$type": awDelete, "collection": unknownColl, "rkey": "absent"}, 400, "RecordNotFound"},
			{"create of existing", obj{"$type": awCreate, "collection": unknownColl, "rkey": "taken", "value": thing(1)}, 409, "RecordAlreadyExists"},
			{"bad rkey", obj{"$type": awCreate, "collection": unknownColl, "rkey": "..", "value": thing(1)}, 400, "InvalidRequest"},
			{"unknown $type", obj{"$type": "com.atproto.repo.applyWrites#upsert", "collection": unknownColl, "rkey": "k", "value": thing(1)}, 400, "InvalidRequest"},
			{"update without rkey", obj{"$type": awUpdate, "collection": unknownColl, "value": thing(1)}, 400, "InvalidRequest"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				before := head(t, s)
				status, b := apply([]obj{
					{"$type": awCreate, "collection": unknownColl, "rkey": "first-of-failed", "value": thing(9)},
					tc.second,
				})
				env := pdstest.MustError(t, status, b, tc.status, tc.err)
				if !strings.Contains(env.Message, "1") {
					t.Logf("message does not name the failing write: %q", env.Message)
				}
				if head(t, s) != before {
					t.Errorf("getLatestCommit changed")
				}
				if exists(unknownColl, "first-of-failed") {
					t.Errorf("first write of a failed batch was applied")
				}
			})
		}
	})

	t.Run("create and delete in one batch", func(t *testing.T) {
		before := head(t, s)
		status, b := apply([]obj{
			{"$type": awCreate, "collection": unknownColl, "rkey": "ephemeral", "value": thing(1)},
			{"$type": awDelete, "collection": unknownColl, "rkey": "ephemeral"},
		})
		if status != http.StatusOK {
			t.Fatalf("status %d: %s", status, b)
		}
		var out applyOut
		decode(t, b, &out)
		if len(out.Results) != 2 || out.Results[0].Type != "com.atproto.repo.applyWrites#createResult" || out.Results[1].Type != "com.atproto.repo.applyWrites#deleteResult" {
			t.Errorf("results %s", b)
		}
		after := head(t, s)
		if out.Commit != nil && *out.Commit != after {
			t.Errorf("commit %+v is not the head %+v", out.Commit, after)
		}
		if out.Commit == nil && after != before {
			t.Errorf("head moved without a commit in the answer")
		}
		if exists(unknownColl, "ephemeral") {
			t.Errorf("record exists")
		}
		verifyFullRepo(t, s.DID(), s.SigningKey(), fetchRepo(t, s))
	})

	t.Run("create then update in one batch", func(t *testing.T) {
		status, b := apply([]obj{
			{"$type": awCreate, "collection": unknownColl, "rkey": "twice", "value": thing(1)},
			{"$type": awUpdate, "collection": unknownColl, "rkey": "twice", "value": thing(2)},
		})
		if status != http.StatusOK {
			t.Fatalf("status %d: %s", status, b)
		}
		var out applyOut
		decode(t, b, &out)
		var got record
		s.Call(t, get, getRecord, q("repo", s.DID(), "collection", unknownColl, "rkey", "twice"), nil, "", &got)
		if got.Value["n"] != float64(2) || got.CID != out.Results[1].CID {
			t.Errorf("stored %+v, want the update %s", got, out.Results[1].CID)
		}
		snap := verifyFullRepo(t, s.DID(), s.SigningKey(), fetchRepo(t, s))
		if c := snap.records[unknownColl+"/twice"]; c.String() != got.CID {
			t.Errorf("MST holds %s, want %s", c, got.CID)
		}
	})

	t.Run("swapCommit", func(t *testing.T) {
		stale := head(t, s).CID
		s.CreateRecord(t, unknownColl, "", thing(1))
		status, b := apply([]obj{{"$type": awCreate, "collection": unknownColl, "value": thing(2)}}, "swapCommit", stale)
		pdstest.MustError(t, status, b, http.StatusBadRequest, "InvalidSwap")
	})

	t.Run("request errors", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			body any
		}{
			{"no writes", obj{"repo": s.DID()}},
			{"empty writes", obj{"repo": s.DID(), "writes": []obj{}}},
			{"writes not an array", obj{"repo": s.DID(), "writes": "x"}},
			{"write not an object", obj{"repo": s.DID(), "writes": []any{5}}},
			{"null write", obj{"repo": s.DID(), "writes": []any{nil}}},
			{"missing value", obj{"repo": s.DID(), "writes": []obj{{"$type": awCreate, "collection": unknownColl}}}},
			{"bad collection", obj{"repo": s.DID(), "writes": []obj{{"$type": awCreate, "collection": "nope", "value": thing(1)}}}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				status, b := s.Do(t, post, applyWrites, nil, tc.body, tok)
				pdstest.MustError(t, status, b, http.StatusBadRequest, "InvalidRequest")
			})
		}
	})
}

// TestWriteRequestErrors covers request validation shared by the write
// methods: encoding, required fields, identifiers and authentication.
func TestWriteRequestErrors(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t)
	tok := s.AdminToken()
	did := s.DID()
	rec := thing(1)

	type tc struct {
		name   string
		nsid   string
		header http.Header // sent instead of the default JSON + admin token when set
		body   any
		status int
		err    string
	}
	cases := []tc{
		{"malformed JSON", createRecord, nil, raw(`{"repo":`), 400, "InvalidRequest"},
		{"trailing data", createRecord, nil, raw(`{"repo":"` + did + `","collection":"` + unknownColl + `","record":{}} {}`), 400, "InvalidRequest"},
		{"empty body", createRecord, nil, raw(``), 400, "InvalidRequest"},
		{"array body", createRecord, nil, raw(`[]`), 400, "InvalidRequest"},
		{"wrong content type", createRecord, http.Header{"Content-Type": {"text/plain"}, "Authorization": {"Bearer " + tok}}, raw(`{"repo":"` + did + `","collection":"` + unknownColl + `","record":{}}`), 400, "InvalidRequest"},
		{"no content type", createRecord, http.Header{"Authorization": {"Bearer " + tok}}, raw(`{"repo":"` + did + `","collection":"` + unknownColl + `","record":{}}`), 400, "InvalidRequest"},
		{"missing repo", createRecord, nil, obj{"collection": unknownColl, "record": rec}, 400, "InvalidRequest"},
		{"missing collection", createRecord, nil, obj{"repo": did, "record": rec}, 400, "InvalidRequest"},
		{"missing record", createRecord, nil, obj{"repo": did, "collection": unknownColl}, 400, "InvalidRequest"},
		{"null record", createRecord, nil, obj{"repo": did, "collection": unknownColl, "record": nil}, 400, "InvalidRequest"},
		{"record not an object", createRecord, nil, obj{"repo": did, "collection": unknownColl, "record": "text"}, 400, "InvalidRequest"},
		{"record an array", createRecord, nil, obj{"repo": did, "collection": unknownColl, "record": []int{1}}, 400, "InvalidRequest"},
		{"repo not a string", createRecord, nil, obj{"repo": 5, "collection": unknownColl, "record": rec}, 400, "InvalidRequest"},
		{"bad NSID", createRecord, nil, obj{"repo": did, "collection": "not-an-nsid", "record": rec}, 400, "InvalidRequest"},
		{"bad NSID put", putRecord, nil, obj{"repo": did, "collection": "a..b", "rkey": "k", "record": rec}, 400, "InvalidRequest"},
		{"bad NSID delete", deleteRecord, nil, obj{"repo": did, "collection": "nsid", "rkey": "k"}, 400, "InvalidRequest"},
		{"rkey ..", createRecord, nil, obj{"repo": did, "collection": unknownColl, "rkey": "..", "record": rec}, 400, "InvalidRequest"},
		{"rkey .", putRecord, nil, obj{"repo": did, "collection": unknownColl, "rkey": ".", "record": rec}, 400, "InvalidRequest"},
		{"rkey a/b", createRecord, nil, obj{"repo": did, "collection": unknownColl, "rkey": "a/b", "record": rec}, 400, "InvalidRequest"},
		{"rkey a/b put", putRecord, nil, obj{"repo": did, "collection": unknownColl, "rkey": "a/b", "record": rec}, 400, "InvalidRequest"},
		{"rkey a/b delete", deleteRecord, nil, obj{"repo": did, "collection": unknownColl, "rkey": "a/b"}, 400, "InvalidRequest"},
		{"rkey empty", createRecord, nil, obj{"repo": did, "collection": unknownColl, "rkey": "", "record": rec}, 400, "InvalidRequest"},
		{"rkey empty put", putRecord, nil, obj{"repo": did, "collection": unknownColl, "rkey": "", "record": rec}, 400, "InvalidRequest"},
		{"rkey empty delete", deleteRecord, nil, obj{"repo": did, "collection": unknownColl, "rkey": ""}, 400, "InvalidRequest"},
		{"rkey with space", createRecord, nil, obj{"repo": did, "collection": unknownColl, "rkey": "a b", "record": rec}, 400, "InvalidRequest"},
		{"rkey too long", createRecord, nil, obj{"repo": did, "collection": unknownColl, "rkey": strings.Repeat("k", 513), "record": rec}, 400, "InvalidRequest"},
		{"no auth", createRecord, http.Header{"Content-Type": {"application/json"}}, obj{"repo": did, "collection": unknownColl, "record": rec}, 401, "AuthMissing"},
		{"wrong token", createRecord, http.Header{"Content-Type": {"application/json"}, "Authorization": {"Bearer wrong-token"}}, obj{"repo": did, "collection": unknownColl, "record": rec}, 401, "InvalidToken"},
		{"wrong basic", createRecord, http.Header{"Content-Type": {"application/json"}, "Authorization": {"Basic YWRtaW46d3Jvbmc="}}, obj{"repo": did, "collection": unknownColl, "record": rec}, 401, "InvalidToken"},
		{"no auth delete", deleteRecord, http.Header{"Content-Type": {"application/json"}}, obj{"repo": did, "collection": unknownColl, "rkey": "k"}, 401, "AuthMissing"},
		{"no auth applyWrites", applyWrites, http.Header{"Content-Type": {"application/json"}}, obj{"repo": did, "writes": []obj{}}, 401, "AuthMissing"},
		{"no auth deactivate", deactivateAccount, http.Header{}, nil, 401, "AuthMissing"},
		{"wrong token activate", activateAccount, http.Header{"Authorization": {"Bearer nope"}}, nil, 401, "InvalidToken"},
		{"unhosted DID", createRecord, nil, obj{"repo": "did:web:elsewhere.test", "collection": unknownColl, "record": rec}, 400, "InvalidRepo"},
		{"unhosted plc DID", putRecord, nil, obj{"repo": "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", "collection": unknownColl, "rkey": "k", "record": rec}, 400, "InvalidRepo"},
		{"unhosted handle", deleteRecord, nil, obj{"repo": "bob.test", "collection": unknownColl, "rkey": "k"}, 400, "InvalidRepo"},
		{"unhosted applyWrites", applyWrites, nil, obj{"repo": "did:web:elsewhere.test", "writes": []obj{{"$type": awCreate, "collection": unknownColl, "value": rec}}}, 400, "InvalidRepo"},
		{"repo not an identifier", createRecord, nil, obj{"repo": "not an identifier", "collection": unknownColl, "record": rec}, 400, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := head(t, s)
			var status int
			var b []byte
			if c.header == nil {
				status, b = s.Do(t, post, c.nsid, nil, c.body, tok)
			} else {
				var body []byte
				switch v := c.body.(type) {
				case nil:
				case []byte:
					body = v
				default:
					var err error
					if body, err = json.Marshal(v); err != nil {
						t.Fatal(err)
					}
				}
				resp, rb := s.Raw(t, post, "/xrpc/"+c.nsid, c.header, strings.NewReader(string(body)))
				status, b = resp.StatusCode, rb
			}
			pdstest.MustError(t, status, b, c.status, c.err)
			if head(t, s) != before {
				t.Errorf("head moved")
			}
		})
	}

	t.Run("basic admin auth accepted", func(t *testing.T) {
		h := http.Header{"Content-Type": {"application/json"}}
		h.Set("Authorization", "Basic "+basic("admin", tok))
		body, _ := json.Marshal(obj{"repo": did, "collection": unknownColl, "record": rec})
		resp, b := s.Raw(t, post, "/xrpc/"+createRecord, h, strings.NewReader(string(body)))
		if resp.StatusCode != http.StatusOK {
			t.Errorf("status %d: %s", resp.StatusCode, b)
		}
	})
	t.Run("content type with charset", func(t *testing.T) {
		h := http.Header{"Content-Type": {"Application/JSON; charset=utf-8"}, "Authorization": {"Bearer " + tok}}
		body, _ := json.Marshal(obj{"repo": did, "collection": unknownColl, "record": rec})
		resp, b := s.Raw(t, post, "/xrpc/"+createRecord, h, strings.NewReader(string(body)))
		if resp.StatusCode != http.StatusOK {
			t.Errorf("status %d: %s", resp.StatusCode, b)
		}
	})
}

func TestRouting(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t)
	for _, tc := range []struct {
		name, method, path string
		status             int
		err                string
		allow              string
	}{
		// Methods not served here are forwarded, for authenticated callers only.
		{"unknown method", get, "/xrpc/com.example.nothing.here", 401, "AuthMissing", ""},
		{"unknown procedure", post, "/xrpc/com.atproto.server.createSession2", 401, "AuthMissing", ""},
		{"invalid nsid", get, "/xrpc/notansid", 400, "InvalidRequest", ""},
		{"GET on a procedure", get, "/xrpc/" + createRecord, 405, "MethodNotAllowed", post},
		{"POST on a query", post, "/xrpc/" + getRecord, 405, "MethodNotAllowed", get},
		{"PUT on a query", http.MethodPut, "/xrpc/" + describeServer, 405, "MethodNotAllowed", get},
		{"DELETE on a procedure", http.MethodDelete, "/xrpc/" + deleteRecord, 405, "MethodNotAllowed", post},
		{"nested path", get, "/xrpc/" + describeServer + "/x", 404, "NotFound", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, b := s.Raw(t, tc.method, tc.path, nil, nil)
			pdstest.MustError(t, resp.StatusCode, b, tc.status, tc.err)
			if tc.allow != "" && resp.Header.Get("Allow") != tc.allow {
				t.Errorf("Allow = %q, want %q", resp.Header.Get("Allow"), tc.allow)
			}
		})
	}
	t.Run("HEAD on a query", func(t *testing.T) {
		resp, b := s.Raw(t, http.MethodHead, "/xrpc/"+describeServer, nil, nil)
		if resp.StatusCode != http.StatusOK || len(b) != 0 {
			t.Errorf("got %d %q", resp.StatusCode, b)
		}
	})
}

func TestBodyLimits(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t)
	tok := s.AdminToken()
	// padded returns a JSON object of at least n bytes that would otherwise
	// be a valid write.
	padded := func(n int, fields string) string {
		pad := strings.Repeat("a", n)
		return `{` + fields + `,"pad":"` + pad + `"}`
	}
	create := `"repo":"` + s.DID() + `","collection":"` + unknownColl + `","record":{"n":1}`
	del := `"repo":"` + s.DID() + `","collection":"` + unknownColl + `","rkey":"k"`
	for _, tc := range []struct {
		name    string
		nsid    string
		body    string
		chunked bool
	}{
		{"createRecord over 4 MiB", createRecord, padded(4<<20, create), false},
		{"createRecord over 4 MiB chunked", createRecord, padded(4<<20, create), true},
		{"applyWrites over 4 MiB", applyWrites, padded(4<<20, `"repo":"`+s.DID()+`","writes":[]`), false},
		{"deleteRecord over 150 KiB", deleteRecord, padded(150<<10, del), false},
		{"deleteRecord over 150 KiB chunked", deleteRecord, padded(150<<10, del), true},
		{"deactivateAccount over 150 KiB", deactivateAccount, padded(150<<10, `"deleteAfter":"2030-01-01T00:00:00Z"`), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{"Content-Type": {"application/json"}, "Authorization": {"Bearer " + tok}}
			var body io.Reader = strings.NewReader(tc.body)
			if tc.chunked {
				// Hide the length so the request is sent chunked and the limit
				// is found while reading.
				body = struct{ *strings.Reader }{strings.NewReader(tc.body)}
			}
			resp, b := s.Raw(t, post, "/xrpc/"+tc.nsid, h, body)
			pdstest.MustError(t, resp.StatusCode, b, http.StatusRequestEntityTooLarge, "PayloadTooLarge")
		})
	}
	// The account must still be active: the refused deactivate did nothing.
	var st struct{ Active bool }
	s.Call(t, get, getRepoStatus, q("did", s.DID()), nil, "", &st)
	if !st.Active {
		t.Errorf("account deactivated by an oversized request")
	}
}

func basic(user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
}

// TestRecordRoundTrip writes records that use every kind of atproto data
// and reads them back through getRecord, listRecords and getRepo: the value
// must come back as written and the stored block must hash to the CID.
func TestRecordRoundTrip(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t)
	const link = "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"
	// Records may reference only blobs the server holds.
	blobRef := upload(t, s, s.Login(t, s.Handle(), pdstest.Password).AccessJWT, "image/png", samplePNG[:123]).Ref.Link
	cases := []struct {
		name string
		rec  string
	}{
		{"strings", `{"a":"héllo ✓","b":"","c":"line\nbreak \"quoted\" \\ \u0000 nul","d":"😀"}`},
		{"integers", `{"zero":0,"neg":-1,"max":9007199254740991,"min":-9007199254740991}`},
		{"bools and null", `{"t":true,"f":false,"n":null}`},
		{"containers", `{"arr":[1,"two",[3],{"four":4}],"empty":[],"obj":{},"nested":{"a":{"b":{"c":[]}}}}`},
		{"bytes", `{"b":{"$bytes":"aGVsbG8"},"many":[{"$bytes":"AA"},{"$bytes":"/w"}]}`},
		{"empty bytes", `{"b":{"$bytes":""}}`},
		{"link", `{"l":{"$link":"` + link + `"}}`},
		{"blob", `{"img":{"$type":"blob","ref":{"$link":"` + blobRef + `"},"mimeType":"image/png","size":123}}`},
		{"typed object", `{"o":{"$type":"com.example.inner","v":1}}`},
	}
	uris := map[string]string{}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			body := raw(`{"repo":"` + s.DID() + `","collection":"` + unknownColl + `","rkey":"` + strings.ReplaceAll(tc.name, " ", "-") + `","record":` + tc.rec + `}`)
			status, b := s.Do(t, post, createRecord, nil, body, s.AdminToken())
			if status != http.StatusOK {
				t.Fatalf("create: %d %s", status, b)
			}
			var w writeOut
			decode(t, b, &w)
			uris[w.URI] = w.CID

			var want map[string]any
			decode(t, []byte(tc.rec), &want)
			want["$type"] = unknownColl

			var got struct {
				CID   string          `json:"cid"`
				Value json.RawMessage `json:"value"`
			}
			s.Call(t, get, getRecord, q("repo", s.DID(), "collection", unknownColl, "rkey", w.RKey()), nil, "", &got)
			var gotVal map[string]any
			decode(t, got.Value, &gotVal)
			if !jsonEqual(gotVal, want) {
				t.Errorf("getRecord value\n got %s\nwant %s", got.Value, mustJSON(want))
			}
			if got.CID != w.CID {
				t.Errorf("getRecord cid %s, create said %s", got.CID, w.CID)
			}
			// Writing the value read back is a no-op: it encodes to the
			// same CID.
			var put writeOut
			s.Call(t, post, putRecord, nil, obj{"repo": s.DID(), "collection": unknownColl, "rkey": w.RKey(), "record": json.RawMessage(got.Value)}, s.AdminToken(), &put)
			if put.CID != w.CID {
				t.Errorf("re-putting the read value gives cid %s, want %s", put.CID, w.CID)
			}
		})
	}
	snap := verifyFullRepo(t, s.DID(), s.SigningKey(), fetchRepo(t, s))
	for uri, c := range uris {
		if got := snap.records[pathOf(t, uri)]; got.String() != c {
			t.Errorf("MST has %s for %s, want %s", got, uri, c)
		}
	}
	for _, r := range listAll(t, s, unknownColl, 100, false) {
		if uris[r.URI] != r.CID {
			t.Errorf("listRecords %s cid %s, want %s", r.URI, r.CID, uris[r.URI])
		}
	}
}

func jsonEqual(a, b any) bool {
	return mustJSON(a) == mustJSON(b)
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// TestDeeplyNestedRecord: the data model recommends at most 32 levels of
// nesting. Whatever the server decides, a deep record must never make a
// read path fail.
func TestDeeplyNestedRecord(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t)
	// The record itself is one level; 31 more keep it at the data model's
	// limit of 32.
	for _, tc := range []struct {
		depth int
		ok    bool
	}{{31, true}, {32, false}, {1000, false}, {5000, false}} {
		t.Run(fmt.Sprint(tc.depth), func(t *testing.T) {
			rec := strings.Repeat(`{"a":`, tc.depth) + "1" + strings.Repeat("}", tc.depth)
			rec = `{"n":` + rec + `}`
			rkey := fmt.Sprintf("deep-%d", tc.depth)
			body := raw(`{"repo":"` + s.DID() + `","collection":"` + unknownColl + `","rkey":"` + rkey + `","record":` + rec + `}`)
			status, b := s.Do(t, post, createRecord, nil, body, s.AdminToken())
			if !tc.ok {
				pdstest.MustError(t, status, b, http.StatusBadRequest, "InvalidRecord")
				return
			}
			if status != http.StatusOK {
				t.Fatalf("record nested %d levels refused: %d %s", tc.depth+1, status, truncate(b))
			}
			st, b := s.Do(t, get, getRecord, q("repo", s.DID(), "collection", unknownColl, "rkey", rkey), nil, "")
			if st != http.StatusOK {
				t.Errorf("getRecord: %d %s", st, truncate(b))
			}
			verifyFullRepo(t, s.DID(), s.SigningKey(), fetchRepo(t, s))
		})
	}
}
