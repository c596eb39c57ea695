package server_test

import (
	"fmt"
	"net/http"
	"slices"
	"sort"
	"testing"

	"stratus/internal/pdstest"
)

func TestGetRecord(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t)
	w := s.CreateRecord(t, postColl, "", pdstest.Post("hello"))
	other := s.CreateRecord(t, unknownColl, "", thing(1))

	t.Run("found", func(t *testing.T) {
		var got record
		s.Call(t, get, getRecord, q("repo", s.DID(), "collection", postColl, "rkey", w.RKey()), nil, "", &got)
		if got.URI != w.URI || got.CID != w.CID {
			t.Errorf("got %s %s, want %s %s", got.URI, got.CID, w.URI, w.CID)
		}
		if got.Value["text"] != "hello" || got.Value["$type"] != postColl {
			t.Errorf("value = %v", got.Value)
		}
	})
	t.Run("by handle", func(t *testing.T) {
		var got record
		s.Call(t, get, getRecord, q("repo", s.Handle(), "collection", postColl, "rkey", w.RKey()), nil, "", &got)
		if got.URI != w.URI {
			t.Errorf("uri %s, want %s", got.URI, w.URI)
		}
	})
	t.Run("matching cid", func(t *testing.T) {
		s.Call(t, get, getRecord, q("repo", s.DID(), "collection", postColl, "rkey", w.RKey(), "cid", w.CID), nil, "", nil)
	})
	for _, tc := range []struct {
		name       string
		coll, rkey string
		cid        string
	}{
		{"missing rkey", postColl, "3aaaaaaaaaaaa", ""},
		{"missing collection", "com.example.empty", w.RKey(), ""},
		{"cid mismatch", postColl, w.RKey(), other.CID},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := q("repo", s.DID(), "collection", tc.coll, "rkey", tc.rkey)
			if tc.cid != "" {
				v.Set("cid", tc.cid)
			}
			status, b := s.Do(t, get, getRecord, v, nil, "")
			env := pdstest.MustError(t, status, b, http.StatusBadRequest, "RecordNotFound")
			if want := fmt.Sprintf("Could not locate record: at://%s/%s/%s", s.DID(), tc.coll, tc.rkey); env.Message != want {
				t.Errorf("message %q, want %q", env.Message, want)
			}
		})
	}
	t.Run("unknown repo", func(t *testing.T) {
		status, b := s.Do(t, get, getRecord, q("repo", "did:web:elsewhere.test", "collection", postColl, "rkey", w.RKey()), nil, "")
		if status < 400 || status >= 500 {
			t.Fatalf("status %d: %s", status, b)
		}
		pdstest.MustError(t, status, b, status, "RepoNotFound")
	})
	t.Run("missing params", func(t *testing.T) {
		for _, v := range []map[string]string{
			{"collection": postColl, "rkey": "x"},
			{"repo": s.DID(), "rkey": "x"},
			{"repo": s.DID(), "collection": postColl},
		} {
			vals := q()
			for k, x := range v {
				vals.Set(k, x)
			}
			status, b := s.Do(t, get, getRecord, vals, nil, "")
			pdstest.MustError(t, status, b, http.StatusBadRequest, "InvalidRequest")
		}
	})
}

func TestListRecords(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t)
	const coll = "com.example.listed"
	const n = 230
	rkeys := seedThings(t, s, coll, n) // ascending TIDs
	if !slices.IsSorted(rkeys) {
		t.Fatalf("auto rkeys of one batch are not in order")
	}
	s.CreateRecord(t, unknownColl, "", thing(1)) // another collection, never listed
	newestFirst := slices.Clone(rkeys)
	slices.Reverse(newestFirst)

	t.Run("limit bounds", func(t *testing.T) {
		for _, tc := range []struct {
			limit  string
			status int
			n      int
		}{{"0", 400, 0}, {"101", 400, 0}, {"-1", 400, 0}, {"x", 400, 0}, {"1", 200, 1}, {"100", 200, 100}} {
			t.Run(tc.limit, func(t *testing.T) {
				status, b := s.Do(t, get, listRecords, q("repo", s.DID(), "collection", coll, "limit", tc.limit), nil, "")
				if tc.status != http.StatusOK {
					pdstest.MustError(t, status, b, tc.status, "InvalidRequest")
					return
				}
				var p listPage
				decode(t, b, &p)
				if len(p.Records) != tc.n || p.Cursor == "" {
					t.Errorf("%d records (cursor %q), want %d and a cursor", len(p.Records), p.Cursor, tc.n)
				}
			})
		}
	})
	t.Run("default page", func(t *testing.T) {
		var p listPage
		s.Call(t, get, listRecords, q("repo", s.DID(), "collection", coll), nil, "", &p)
		if len(p.Records) != 50 {
			t.Fatalf("%d records, want 50", len(p.Records))
		}
		for i, r := range p.Records {
			if r.rkey() != newestFirst[i] {
				t.Fatalf("record %d is %s, want %s (newest first)", i, r.rkey(), newestFirst[i])
			}
		}
		if p.Cursor != newestFirst[49] {
			t.Errorf("cursor %q, want the last rkey %q", p.Cursor, newestFirst[49])
		}
	})
	t.Run("reverse", func(t *testing.T) {
		var p listPage
		s.Call(t, get, listRecords, q("repo", s.DID(), "collection", coll, "reverse", "true", "limit", "10"), nil, "", &p)
		for i, r := range p.Records {
			if r.rkey() != rkeys[i] {
				t.Fatalf("record %d is %s, want %s (oldest first)", i, r.rkey(), rkeys[i])
			}
		}
	})
	for _, reverse := range []bool{false, true} {
		t.Run(fmt.Sprintf("paging limit 7 reverse=%v", reverse), func(t *testing.T) {
			all := listAll(t, s, coll, 7, reverse)
			want := newestFirst
			if reverse {
				want = rkeys
			}
			got := make([]string, len(all))
			for i, r := range all {
				got[i] = r.rkey()
			}
			if !slices.Equal(got, want) {
				t.Errorf("paged %d records, want %d in order; first difference at %d", len(got), len(want), firstDiff(got, want))
			}
		})
	}
	t.Run("page values", func(t *testing.T) {
		var p listPage
		s.Call(t, get, listRecords, q("repo", s.DID(), "collection", coll, "limit", "1"), nil, "", &p)
		var one record
		s.Call(t, get, getRecord, q("repo", s.DID(), "collection", coll, "rkey", p.Records[0].rkey()), nil, "", &one)
		if one.CID != p.Records[0].CID || one.URI != p.Records[0].URI || fmt.Sprint(one.Value) != fmt.Sprint(p.Records[0].Value) {
			t.Errorf("listRecords %+v differs from getRecord %+v", p.Records[0], one)
		}
	})
	t.Run("cursor after deleting the cursor record", func(t *testing.T) {
		for _, reverse := range []bool{false, true} {
			v := q("repo", s.DID(), "collection", coll, "limit", "5")
			if reverse {
				v.Set("reverse", "true")
			}
			var p1 listPage
			s.Call(t, get, listRecords, v, nil, "", &p1)
			if p1.Cursor == "" {
				t.Fatalf("no cursor")
			}
			s.Call(t, post, deleteRecord, nil, obj{"repo": s.DID(), "collection": coll, "rkey": p1.Cursor}, s.AdminToken(), nil)
			v.Set("cursor", p1.Cursor)
			var p2 listPage
			s.Call(t, get, listRecords, v, nil, "", &p2)
			if len(p2.Records) != 5 {
				t.Fatalf("%d records after the deleted cursor, want 5", len(p2.Records))
			}
			for _, r := range p2.Records {
				if r.rkey() == p1.Cursor || (!reverse && r.rkey() > p1.Cursor) || (reverse && r.rkey() < p1.Cursor) {
					t.Errorf("record %s is not after cursor %s", r.rkey(), p1.Cursor)
				}
			}
			// The page continues exactly where it left off.
			var full listPage
			v2 := q("repo", s.DID(), "collection", coll, "limit", "10")
			if reverse {
				v2.Set("reverse", "true")
			}
			s.Call(t, get, listRecords, v2, nil, "", &full)
			for i := range 4 {
				if full.Records[i].rkey() != p1.Records[i].rkey() {
					t.Fatalf("first page changed")
				}
			}
			for i := range 5 {
				if full.Records[4+i].rkey() != p2.Records[i].rkey() {
					t.Errorf("record %d after cursor is %s, want %s", i, p2.Records[i].rkey(), full.Records[4+i].rkey())
				}
			}
		}
	})
	t.Run("empty collection", func(t *testing.T) {
		var p listPage
		status, b := s.Do(t, get, listRecords, q("repo", s.DID(), "collection", "com.example.none"), nil, "")
		if status != http.StatusOK {
			t.Fatalf("status %d: %s", status, b)
		}
		decode(t, b, &p)
		if p.Records == nil || len(p.Records) != 0 || p.Cursor != "" {
			t.Errorf("got %s, want {\"records\":[]}", b)
		}
	})
	t.Run("malformed cursor", func(t *testing.T) {
		status, b := s.Do(t, get, listRecords, q("repo", s.DID(), "collection", coll, "cursor", "a/b"), nil, "")
		pdstest.MustError(t, status, b, http.StatusBadRequest, "")
	})
}

func firstDiff(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func TestDescribeRepo(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t)
	for _, c := range []string{"com.example.zeta", postColl, "com.example.alpha", unknownColl, "com.example.alpha"} {
		rec := obj{"x": 1}
		if c == postColl {
			rec = pdstest.Post("p")
		}
		s.CreateRecord(t, c, "", rec)
	}
	s.CreateRecord(t, "com.example.gone", "g", obj{"x": 1})
	s.Call(t, post, deleteRecord, nil, obj{"repo": s.DID(), "collection": "com.example.gone", "rkey": "g"}, s.AdminToken(), nil)

	for _, repo := range []string{s.DID(), s.Handle(), "ALICE.test"} {
		t.Run(repo, func(t *testing.T) {
			var out struct {
				Handle string `json:"handle"`
				DID    string `json:"did"`
				DIDDoc struct {
					ID          string   `json:"id"`
					AlsoKnownAs []string `json:"alsoKnownAs"`
					Service     []struct {
						ID              string `json:"id"`
						Type            string `json:"type"`
						ServiceEndpoint string `json:"serviceEndpoint"`
					} `json:"service"`
					VerificationMethod []struct {
						PublicKeyMultibase string `json:"publicKeyMultibase"`
					} `json:"verificationMethod"`
				} `json:"didDoc"`
				Collections     []string `json:"collections"`
				HandleIsCorrect *bool    `json:"handleIsCorrect"`
			}
			s.Call(t, get, describeRepo, q("repo", repo), nil, "", &out)
			if out.Handle != s.Handle() || out.DID != s.DID() || out.DIDDoc.ID != s.DID() {
				t.Errorf("handle %q did %q doc id %q", out.Handle, out.DID, out.DIDDoc.ID)
			}
			want := []string{postColl, "com.example.alpha", unknownColl, "com.example.zeta"}
			sort.Strings(want)
			if !slices.Equal(out.Collections, want) {
				t.Errorf("collections %v, want %v", out.Collections, want)
			}
			if len(out.DIDDoc.Service) != 1 || out.DIDDoc.Service[0].ServiceEndpoint != s.PublicURL() ||
				out.DIDDoc.Service[0].Type != "AtprotoPersonalDataServer" || out.DIDDoc.Service[0].ID != "#atproto_pds" {
				t.Errorf("service %+v", out.DIDDoc.Service)
			}
			if len(out.DIDDoc.VerificationMethod) != 1 || "did:key:"+out.DIDDoc.VerificationMethod[0].PublicKeyMultibase != s.SigningKey().DIDKey() {
				t.Errorf("verification methods %+v", out.DIDDoc.VerificationMethod)
			}
			if out.HandleIsCorrect == nil {
				t.Errorf("handleIsCorrect missing")
			}
		})
	}
	t.Run("unknown repo", func(t *testing.T) {
		status, b := s.Do(t, get, describeRepo, q("repo", "bob.test"), nil, "")
		if status < 400 || status >= 500 {
			t.Fatalf("status %d: %s", status, b)
		}
		pdstest.MustError(t, status, b, status, "RepoNotFound")
	})
}
