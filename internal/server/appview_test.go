package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/syntax"

	"stratus/internal/config"
	stridentity "stratus/internal/identity"
	"stratus/internal/identity/plctest"
	"stratus/internal/pdstest"
	"stratus/internal/server"
)

// The AppView returns a timeline without the post just written; the
// answer the client gets has it, rendered from the local record, newest
// first; the profile shows the new display name.
func TestReadAfterWrite(t *testing.T) {
	t.Parallel()
	s, av, _ := proxied(t)
	sess := s.Login(t, s.Handle(), pdstest.Password)
	indexed := s.CreateRecord(t, postColl, "", pdstest.Post("indexed by the AppView"))
	fresh := s.CreateRecord(t, postColl, "", pdstest.Post("just written"))
	s.Call(t, post, putRecord, nil, map[string]any{"repo": s.DID(), "collection": profileColl, "rkey": "self",
		"record": map[string]any{"$type": profileColl, "displayName": "Alice New", "description": "fresh"}}, sess.AccessJWT, nil)
	author := map[string]any{"did": s.DID(), "handle": s.Handle(), "displayName": "Alice Old"}
	av.setHandler(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.Header().Set("Atproto-Repo-Rev", indexed.Commit.Rev)
		var out any
		switch r.URL.Path {
		case "/xrpc/app.bsky.feed.getTimeline":
			out = map[string]any{"cursor": "c1", "feed": []any{map[string]any{"post": map[string]any{
				"uri": indexed.URI, "cid": indexed.CID, "author": author, "record": pdstest.Post("indexed by the AppView"),
				"indexedAt": "2000-01-01T00:00:00.000Z", "likeCount": 7}}}}
		case "/xrpc/app.bsky.actor.getProfile":
			out = map[string]any{"did": s.DID(), "handle": s.Handle(), "displayName": "Alice Old", "followersCount": 3}
		}
		json.NewEncoder(w).Encode(out)
	})
	var tl struct {
		Cursor string `json:"cursor"`
		Feed   []struct {
			Post map[string]any `json:"post"`
		} `json:"feed"`
	}
	s.Call(t, get, "app.bsky.feed.getTimeline", nil, nil, sess.AccessJWT, &tl)
	if len(tl.Feed) != 2 || tl.Cursor != "c1" {
		t.Fatalf("timeline has %d items (cursor %q), want 2", len(tl.Feed), tl.Cursor)
	}
	got := tl.Feed[0].Post
	if got["uri"] != fresh.URI || got["cid"] != fresh.CID || tl.Feed[1].Post["uri"] != indexed.URI {
		t.Fatalf("merged timeline: %v", tl.Feed)
	}
	rec, _ := got["record"].(map[string]any)
	auth, _ := got["author"].(map[string]any)
	if rec["text"] != "just written" || auth["did"] != s.DID() || auth["handle"] != s.Handle() || auth["displayName"] != "Alice New" || got["likeCount"] != float64(0) || got["indexedAt"] == "" {
		t.Fatalf("local post view: %v", got)
	}
	if n, _ := tl.Feed[1].Post["likeCount"].(float64); n != 7 {
		t.Error("the AppView's own item changed")
	}
	checkClaims(t, av.last(t), s, appViewDID, "app.bsky.feed.getTimeline")

	var prof map[string]any
	s.Call(t, get, "app.bsky.actor.getProfile", url.Values{"actor": {s.DID()}}, nil, sess.AccessJWT, &prof)
	if prof["displayName"] != "Alice New" || prof["description"] != "fresh" || prof["followersCount"] != float64(3) {
		t.Fatalf("merged profile: %v", prof)
	}

	// Once the AppView has caught up, its answer passes unchanged.
	av.setHandler(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Atproto-Repo-Rev", s.LatestCommit(t).Rev)
		w.Write([]byte(`{"feed":[]}`))
	})
	resp, body := s.Raw(t, get, "/xrpc/app.bsky.feed.getTimeline", http.Header{"Authorization": {"Bearer " + sess.AccessJWT}}, nil)
	if resp.StatusCode != 200 || strings.TrimSpace(string(body)) != `{"feed":[]}` {
		t.Fatalf("caught-up timeline: %d %s", resp.StatusCode, body)
	}
}

// Preferences are stored here, validated, and personal details are only
// for full sessions.
func TestPreferences(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t)
	full := s.Login(t, s.Handle(), pdstest.Password)
	var plain struct {
		Password string `json:"password"`
	}
	s.Call(t, post, "com.atproto.server.createAppPassword", nil, map[string]any{"name": "p"}, s.AdminToken(), &plain)
	app := s.Login(t, s.Handle(), plain.Password)
	adult := map[string]any{"$type": "app.bsky.actor.defs#personalDetailsPref", "birthDate": "1990-05-01T00:00:00.000Z"}
	feeds := map[string]any{"$type": "app.bsky.actor.defs#savedFeedsPrefV2", "items": []any{}}
	s.Call(t, post, "app.bsky.actor.putPreferences", nil, map[string]any{"preferences": []any{adult, feeds}}, full.AccessJWT, nil)
	types := func(tok string) []string {
		var out struct {
			Preferences []map[string]any `json:"preferences"`
		}
		s.Call(t, get, "app.bsky.actor.getPreferences", nil, nil, tok, &out)
		var ts []string
		for _, p := range out.Preferences {
			ts = append(ts, fmt.Sprint(p["$type"]))
			if p["$type"] == "app.bsky.actor.defs#declaredAgePref" && p["isOverAge18"] != true {
				t.Errorf("declared age: %v", p)
			}
		}
		return ts
	}
	want := "app.bsky.actor.defs#personalDetailsPref app.bsky.actor.defs#savedFeedsPrefV2 app.bsky.actor.defs#declaredAgePref"
	if got := strings.Join(types(full.AccessJWT), " "); got != want {
		t.Fatalf("full session sees %s, want %s", got, want)
	}
	if got := strings.Join(types(app.AccessJWT), " "); got != "app.bsky.actor.defs#savedFeedsPrefV2 app.bsky.actor.defs#declaredAgePref" {
		t.Fatalf("app password sees %s", got)
	}
	// An app password's put keeps the personal details it cannot see.
	s.Call(t, post, "app.bsky.actor.putPreferences", nil, map[string]any{"preferences": []any{}}, app.AccessJWT, nil)
	if got := strings.Join(types(full.AccessJWT), " "); got != "app.bsky.actor.defs#personalDetailsPref app.bsky.actor.defs#declaredAgePref" {
		t.Fatalf("after app-password put: %s", got)
	}
	var st struct {
		PrivateStateValues int64 `json:"privateStateValues"`
	}
	s.Call(t, get, checkAccountStatus, nil, nil, full.AccessJWT, &st)
	if st.PrivateStateValues != 1 {
		t.Errorf("privateStateValues = %d, want 1", st.PrivateStateValues)
	}
	for _, c := range []struct {
		tok  string
		body any
	}{
		{app.AccessJWT, map[string]any{"preferences": []any{adult}}},
		{full.AccessJWT, map[string]any{"preferences": []any{map[string]any{"items": []any{}}}}},
		{full.AccessJWT, map[string]any{"preferences": []any{map[string]any{"$type": "com.example.pref"}}}},
		{full.AccessJWT, map[string]any{"preferences": []any{"nope"}}},
		{full.AccessJWT, map[string]any{"preferences": []any{map[string]any{"$type": 5}}}},
		{full.AccessJWT, map[string]any{}},
	} {
		status, body := s.Do(t, post, "app.bsky.actor.putPreferences", nil, c.body, c.tok)
		pdstest.MustError(t, status, body, http.StatusBadRequest, "InvalidRequest")
	}
}

// Handle changes on a did:web account: the served DID document and the
// settings follow, #identity goes out, resolveHandle answers the new
// handle; a handle that does not resolve to the account is refused.
func TestUpdateHandleWeb(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t, pdstest.WithUserDomains(".pds.test"))
	sess := s.Login(t, s.Handle(), pdstest.Password)
	before := s.LastSeq(t)
	s.Call(t, post, "com.atproto.identity.updateHandle", nil, map[string]any{"handle": "Bob.PDS.test"}, sess.AccessJWT, nil)
	_, doc := s.Raw(t, get, "/.well-known/did.json", nil, nil)
	if !strings.Contains(string(doc), `"at://bob.pds.test"`) {
		t.Fatalf("did.json: %s", doc)
	}
	var res struct {
		DID string `json:"did"`
	}
	s.Call(t, get, resolveHandle, url.Values{"handle": {"bob.pds.test"}}, nil, "", &res)
	if res.DID != s.DID() {
		t.Fatalf("resolveHandle: %s", res.DID)
	}
	if evs := s.Events(t, before); len(evs) != 1 || evs[0].Type != "identity" {
		t.Fatalf("events after handle change: %v", evs)
	}
	b, _ := os.ReadFile(filepath.Join(s.DataDir(), config.SettingsFile))
	if !strings.Contains(string(b), `"handle": "bob.pds.test"`) {
		t.Errorf("settings.json not updated: %s", b)
	}
	for _, h := range []string{"not a handle", "bob.invalid"} {
		status, body := s.Do(t, post, "com.atproto.identity.updateHandle", nil, map[string]any{"handle": h}, sess.AccessJWT)
		pdstest.MustError(t, status, body, http.StatusBadRequest, "")
	}
	status, body := s.Do(t, get, resolveHandle, url.Values{"handle": {"nobody.pds.test"}}, nil, "")
	pdstest.MustError(t, status, body, http.StatusBadRequest, "HandleNotFound")
}

// fakeResolver stands in for DNS and HTTPS handle resolution.
type fakeResolver map[string]string

func (f fakeResolver) ResolveHandle(_ context.Context, h syntax.Handle) (syntax.DID, error) {
	if d, ok := f[h.String()]; ok {
		return syntax.DID(d), nil
	}
	return "", fmt.Errorf("no such handle")
}

// A custom domain handle is accepted once it resolves to the account.
func TestUpdateHandleCustomDomain(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t, pdstest.WithServerOptions(func(o *server.Options) {
		o.HandleResolver = fakeResolver{"alice.example.com": "did:web:pds.test", "mallory.example.com": "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"}
	}))
	s.Call(t, post, "com.atproto.identity.updateHandle", nil, map[string]any{"handle": "alice.example.com"}, s.AdminToken(), nil)
	status, body := s.Do(t, post, "com.atproto.identity.updateHandle", nil, map[string]any{"handle": "mallory.example.com"}, s.AdminToken())
	pdstest.MustError(t, status, body, http.StatusBadRequest, "InvalidRequest")
	var res struct {
		DID string `json:"did"`
	}
	s.Call(t, get, resolveHandle, url.Values{"handle": {"mallory.example.com"}}, nil, "", &res)
	if res.DID != "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa" {
		t.Fatalf("remote resolveHandle: %s", res.DID)
	}
}

// plcAccount starts a server whose account is a did:plc registered with a
// stand-in PLC directory, with the server holding its rotation key.
func plcAccount(t *testing.T) (*pdstest.Server, *plctest.Server, atcrypto.PrivateKey) {
	t.Helper()
	plc := plctest.NewServer(t)
	rot, _ := atcrypto.GeneratePrivateKeyK256()
	sk, _ := atcrypto.GeneratePrivateKeyK256()
	spub, _ := sk.PublicKey()
	op, err := stridentity.NewGenesis(rot, nil, spub, "alice.pds.test", "https://pds.test")
	if err != nil {
		t.Fatal(err)
	}
	did, err := plc.Register(op)
	if err != nil {
		t.Fatal(err)
	}
	s := pdstest.NewServer(t, pdstest.WithUserDomains(".pds.test"), pdstest.WithHandle("alice.pds.test"), pdstest.WithConfig(func(c *config.Config) {
		c.DID, c.PLCURL = did.String(), plc.URL()
		c.SigningKey, c.SigningKeyPublic = config.EncodeKey(sk), spub.DIDKey()
		c.RotationKey = config.EncodeKey(rot)
	}))
	return s, plc, rot
}

// did:plc identity operations against the stand-in PLC directory: a
// handle change is a signed PLC operation; the migration flow's token goes
// to the operator, is single-use, and the signed operation is accepted by
// the directory when submitted.
func TestPLCOperations(t *testing.T) {
	t.Parallel()
	s, plc, rot := plcAccount(t)
	did := syntax.DID(s.DID())
	sess := s.Login(t, s.Handle(), pdstest.Password)
	before := s.LastSeq(t)
	s.Call(t, post, "com.atproto.identity.updateHandle", nil, map[string]any{"handle": "carol.pds.test"}, sess.AccessJWT, nil)
	op, _ := plc.Operation(did)
	if plc.Updates() != 1 || op.AlsoKnownAs[0] != "at://carol.pds.test" {
		t.Fatalf("PLC after handle change: %d updates, %v", plc.Updates(), op.AlsoKnownAs)
	}
	if evs := s.Events(t, before); len(evs) != 1 || evs[0].Type != "identity" {
		t.Fatalf("events: %v", evs)
	}

	var creds struct {
		RotationKeys []string                         `json:"rotationKeys"`
		AlsoKnownAs  []string                         `json:"alsoKnownAs"`
		Services     map[string]stridentity.OpService `json:"services"`
	}
	s.Call(t, get, "com.atproto.identity.getRecommendedDidCredentials", nil, nil, sess.AccessJWT, &creds)
	rpub, _ := rot.PublicKey()
	if len(creds.RotationKeys) != 1 || creds.RotationKeys[0] != rpub.DIDKey() || creds.AlsoKnownAs[0] != "at://carol.pds.test" || creds.Services["atproto_pds"].Endpoint != "https://pds.test" {
		t.Fatalf("credentials: %+v", creds)
	}

	// Without a request there is no token; app passwords cannot start one.
	status, body := s.Do(t, get, "app.stratus.admin.getPlcOperationToken", nil, nil, s.AdminToken())
	pdstest.MustError(t, status, body, http.StatusBadRequest, "InvalidRequest")
	s.Call(t, post, "com.atproto.identity.requestPlcOperationSignature", nil, nil, sess.AccessJWT, nil)
	var tok struct {
		Token string `json:"token"`
	}
	s.Call(t, get, "app.stratus.admin.getPlcOperationToken", nil, nil, s.AdminToken(), &tok)
	extra, _ := atcrypto.GeneratePrivateKeyK256()
	epub, _ := extra.PublicKey()
	in := map[string]any{"token": "WRONG-TOKEN", "rotationKeys": []string{rpub.DIDKey(), epub.DIDKey()}}
	status, body = s.Do(t, post, "com.atproto.identity.signPlcOperation", nil, in, sess.AccessJWT)
	pdstest.MustError(t, status, body, http.StatusUnauthorized, "InvalidToken")
	in["token"] = tok.Token
	var signed struct {
		Operation json.RawMessage `json:"operation"`
	}
	s.Call(t, post, "com.atproto.identity.signPlcOperation", nil, in, sess.AccessJWT, &signed)
	status, body = s.Do(t, post, "com.atproto.identity.signPlcOperation", nil, in, sess.AccessJWT)
	pdstest.MustError(t, status, body, http.StatusUnauthorized, "InvalidToken") // single use
	before = s.LastSeq(t)
	s.Call(t, post, "com.atproto.identity.submitPlcOperation", nil, map[string]any{"operation": signed.Operation}, sess.AccessJWT, nil)
	op, _ = plc.Operation(did)
	if plc.Updates() != 2 || len(op.RotationKeys) != 2 || op.RotationKeys[1] != epub.DIDKey() {
		t.Fatalf("PLC after submit: %d updates, %v", plc.Updates(), op.RotationKeys)
	}
	if evs := s.Events(t, before); len(evs) != 1 || evs[0].Type != "identity" {
		t.Fatalf("events after submit: %v", evs)
	}
	// An operation that would move the account away is refused here.
	var moved map[string]any
	json.Unmarshal(signed.Operation, &moved)
	moved["services"] = map[string]any{"atproto_pds": map[string]any{"type": "AtprotoPersonalDataServer", "endpoint": "https://elsewhere.test"}}
	status, body = s.Do(t, post, "com.atproto.identity.submitPlcOperation", nil, map[string]any{"operation": moved}, sess.AccessJWT)
	pdstest.MustError(t, status, body, http.StatusBadRequest, "InvalidRequest")

	var plain struct {
		Password string `json:"password"`
	}
	s.Call(t, post, "com.atproto.server.createAppPassword", nil, map[string]any{"name": "p"}, s.AdminToken(), &plain)
	app := s.Login(t, s.Handle(), plain.Password)
	for _, m := range []string{"com.atproto.identity.requestPlcOperationSignature", "com.atproto.identity.signPlcOperation", "com.atproto.identity.submitPlcOperation"} {
		status, body := s.Do(t, post, m, nil, map[string]any{}, app.AccessJWT)
		pdstest.MustError(t, status, body, http.StatusUnauthorized, "InvalidToken")
	}
}
