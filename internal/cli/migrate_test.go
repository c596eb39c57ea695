package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	atrepo "github.com/bluesky-social/indigo/atproto/repo"
	"github.com/bluesky-social/indigo/atproto/syntax"

	"stratus/internal/config"
	stridentity "stratus/internal/identity"
	"stratus/internal/identity/plctest"
	"stratus/internal/pdstest"
)

// migrationPair starts two servers for one did:plc on a stand-in PLC
// directory: the account's current home (old.test, active, holding the
// rotation key the DID was registered with) and a target prepared for it
// (new.test, deactivated, with its own signing and rotation keys), as
// `pds init --migrate` leaves it.
func migrationPair(t *testing.T) (src, dst *pdstest.Server, plc *plctest.Server) {
	t.Helper()
	plc = plctest.NewServer(t)
	rot, _ := atcrypto.GeneratePrivateKeyK256()
	sk, _ := atcrypto.GeneratePrivateKeyK256()
	spub, _ := sk.PublicKey()
	op, err := stridentity.NewGenesis(rot, nil, spub, "alice.old.test", "https://old.test")
	if err != nil {
		t.Fatal(err)
	}
	did, err := plc.Register(op)
	if err != nil {
		t.Fatal(err)
	}
	src = pdstest.NewServer(t, pdstest.WithHostname("old.test"), pdstest.WithHandle("alice.old.test"),
		pdstest.WithUserDomains(".old.test"), pdstest.WithConfig(func(c *config.Config) {
			c.DID, c.PLCURL = did.String(), plc.URL()
			c.SigningKey, c.SigningKeyPublic = config.EncodeKey(sk), spub.DIDKey()
			c.RotationKey = config.EncodeKey(rot)
		}))
	trot, _ := atcrypto.GeneratePrivateKeyK256()
	dst = pdstest.NewServer(t, pdstest.WithHostname("new.test"), pdstest.WithHandle("alice.new.test"),
		pdstest.WithUserDomains(".new.test"), pdstest.WithInitiallyActive(false), pdstest.WithConfig(func(c *config.Config) {
			c.DID, c.PLCURL = did.String(), plc.URL()
			c.RotationKey = config.EncodeKey(trot)
		}))
	return src, dst, plc
}

type migStatus struct {
	Activated      bool   `json:"activated"`
	RepoCommit     string `json:"repoCommit"`
	IndexedRecords int64  `json:"indexedRecords"`
	ExpectedBlobs  int64  `json:"expectedBlobs"`
	ImportedBlobs  int64  `json:"importedBlobs"`
	ValidDID       bool   `json:"validDid"`
}

// TestMigrateIn moves an account between two servers with pds migrate in:
// records, blobs, preferences and the PLC identity arrive, the target
// announces the import on its firehose, and the old server ends
// deactivated. The first run stops for the PLC token; the second, given
// it, finishes.
func TestMigrateIn(t *testing.T) {
	t.Parallel()
	src, dst, plc := migrationPair(t)
	did := syntax.DID(src.DID())

	// The account's data on the old server: posts, one with an image.
	srcSess := src.Login(t, "alice.old.test", pdstest.Password)
	img := bytes.Repeat([]byte{0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'}, 64)
	resp, body := src.Raw(t, http.MethodPost, "/xrpc/com.atproto.repo.uploadBlob",
		http.Header{"Authorization": {"Bearer " + srcSess.AccessJWT}, "Content-Type": {"image/png"}}, bytes.NewReader(img))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("upload: %d %s", resp.StatusCode, body)
	}
	var up struct {
		Blob map[string]any `json:"blob"`
	}
	json.Unmarshal(body, &up)
	for i := range 5 {
		src.CreateRecord(t, "app.bsky.feed.post", "", pdstest.Post("post "+string(rune('a'+i))))
	}
	withImage := pdstest.Post("with image")
	withImage["embed"] = map[string]any{"$type": "app.bsky.embed.images", "images": []any{map[string]any{"image": up.Blob, "alt": "x"}}}
	src.CreateRecord(t, "app.bsky.feed.post", "", withImage)
	prefs := []any{map[string]any{"$type": "app.bsky.actor.defs#adultContentPref", "enabled": true}}
	src.Call(t, http.MethodPost, "app.bsky.actor.putPreferences", nil, map[string]any{"preferences": prefs}, srcSess.AccessJWT, nil)
	before := dst.LastSeq(t)
	// Leaving a Stratus: the source serves listBlobs to the new host's
	// tools; the rest of what they call is exercised by the move below.
	var lb struct {
		CIDs []string `json:"cids"`
	}
	src.Call(t, http.MethodGet, "com.atproto.sync.listBlobs", url.Values{"did": {did.String()}}, nil, "", &lb)
	if len(lb.CIDs) != 1 {
		t.Fatalf("listBlobs on the old server: %v", lb.CIDs)
	}

	args := []string{"migrate", "in", "--from", src.URL(), "--identifier", "alice.old.test",
		"--server", dst.URL(), "--admin-token", dst.AdminToken(), "--plc-url", plc.URL()}
	env := map[string]string{"PDS_OLD_PASSWORD": pdstest.Password}
	first := run(t, env, args...)
	if first.code != 1 || !strings.Contains(first.stderr, "--plc-token") {
		t.Fatalf("first run should stop for the PLC token: %v", first)
	}
	if strings.Contains(first.stdout+first.stderr, pdstest.Password) {
		t.Fatalf("the password was printed: %v", first)
	}
	// Repository and blobs are here already, the account still inactive.
	var st migStatus
	dst.Call(t, http.MethodGet, "com.atproto.server.checkAccountStatus", nil, nil, dst.AdminToken(), &st)
	if st.Activated || st.ValidDID || st.IndexedRecords != 6 || st.ExpectedBlobs != 1 || st.ImportedBlobs != 1 {
		t.Fatalf("target after the first run: %+v", st)
	}
	var tok struct {
		Token string `json:"token"`
	}
	src.Call(t, http.MethodGet, "app.stratus.admin.getPlcOperationToken", nil, nil, src.AdminToken(), &tok)
	second := mustRun(t, env, append(args, "--plc-token", tok.Token)...)
	if !strings.Contains(second.stdout, "now lives on this server") {
		t.Fatalf("second run: %v", second)
	}

	// Identity: the PLC directory names the new server and its key.
	op, _ := plc.Operation(did)
	if op.Services["atproto_pds"].Endpoint != "https://new.test" || op.VerificationMethods["atproto"] != dst.SigningKey().DIDKey() {
		t.Fatalf("PLC after migration: %+v", op)
	}
	// Records, blob and preferences are on the new server.
	dst.Call(t, http.MethodGet, "com.atproto.server.checkAccountStatus", nil, nil, dst.AdminToken(), &st)
	if !st.Activated || !st.ValidDID || st.IndexedRecords != 6 || st.ExpectedBlobs != st.ImportedBlobs || st.ImportedBlobs != 1 {
		t.Fatalf("target after migration: %+v", st)
	}
	var list struct {
		Records []json.RawMessage `json:"records"`
	}
	dst.Call(t, http.MethodGet, "com.atproto.repo.listRecords", url.Values{"repo": {did.String()}, "collection": {"app.bsky.feed.post"}}, nil, "", &list)
	if len(list.Records) != 6 {
		t.Fatalf("records here: %d", len(list.Records))
	}
	link := up.Blob["ref"].(map[string]any)["$link"].(string)
	resp, got := dst.Raw(t, http.MethodGet, "/xrpc/com.atproto.sync.getBlob?did="+did.String()+"&cid="+link, nil, nil)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(got, img) {
		t.Fatalf("blob here: %d, %d bytes", resp.StatusCode, len(got))
	}
	sess := dst.Login(t, did.String(), pdstest.Password)
	var p struct {
		Preferences []map[string]any `json:"preferences"`
	}
	dst.Call(t, http.MethodGet, "app.bsky.actor.getPreferences", nil, nil, sess.AccessJWT, &p)
	if len(p.Preferences) != 1 || p.Preferences[0]["enabled"] != true {
		t.Fatalf("preferences here: %+v", p.Preferences)
	}
	// The repository verifies against the key the DID document now names.
	resp, car := dst.Raw(t, http.MethodGet, "/xrpc/com.atproto.sync.getRepo?did="+did.String(), nil, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("getRepo here: %d", resp.StatusCode)
	}
	commit, _, err := atrepo.LoadRepoFromCAR(context.Background(), bytes.NewReader(car))
	if err != nil {
		t.Fatal(err)
	}
	if err := commit.VerifySignature(dst.SigningKey()); err != nil {
		t.Fatalf("commit here does not verify with the new key: %v", err)
	}
	// The firehose announced the import (#sync) and the activation.
	types := map[string]int{}
	for _, ev := range dst.Events(t, before) {
		types[ev.Type]++
	}
	if types["sync"] < 2 || types["account"] < 1 || types["identity"] < 1 {
		t.Fatalf("target firehose: %v", types)
	}
	// The old server has the account deactivated.
	var rs struct {
		Active bool   `json:"active"`
		Status string `json:"status"`
	}
	src.Call(t, http.MethodGet, "com.atproto.sync.getRepoStatus", url.Values{"did": {did.String()}}, nil, "", &rs)
	if rs.Active || rs.Status != "deactivated" {
		t.Fatalf("old server: %+v", rs)
	}
	// Claiming the account again is refused now that it lives here.
	third := run(t, env, args...)
	if third.code == 0 && !strings.Contains(third.stdout, "already active") {
		t.Fatalf("third run: %v", third)
	}
}

// TestInitMigrate prepares a data directory for an existing did:plc: the
// account starts deactivated, this server gets its own rotation key and
// no DID is registered.
func TestInitMigrate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir() + "/data"
	did := "did:plc:abcdefghijklmnopqrstuvwx"
	r := mustRun(t, nil, initArgs(dir, "--migrate", "--did", did, "--handle", "alice.example.com", "--json")...)
	var out map[string]any
	decodeOne(t, r.stdout, &out)
	if out["did"] != did || out["rotationKey"] == nil {
		t.Fatalf("init --migrate: %v", out)
	}
	settings := readJSONFile(t, dir+"/settings.json")
	if settings["initially-active"] != false || settings["did"] != did {
		t.Fatalf("settings: %v", settings)
	}
	if r := run(t, nil, initArgs(t.TempDir()+"/x", "--migrate")...); r.code != 2 {
		t.Fatalf("--migrate without --did: %v", r)
	}
}
