//go:build unix

package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/atcrypto"
	atrepo "github.com/bluesky-social/indigo/atproto/repo"
	"github.com/coder/websocket"

	"stratus/internal/blob"
	"stratus/internal/config"
)

// binServer is a `pds serve` process.
type binServer struct {
	cmd    *exec.Cmd
	base   string
	exited chan struct{}
	stderr *syncBuffer
}

// startBin starts the binary on dir and waits until it listens.
func startBin(t *testing.T, bin, dir string) *binServer {
	t.Helper()
	cmd := exec.Command(bin, "serve", "--data-dir", dir, "--port", "0", "--log-level", "warn")
	cmd.Env = binEnv()
	var stdout, stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &binServer{cmd: cmd, exited: make(chan struct{}), stderr: &stderr}
	go func() { cmd.Wait(); close(s.exited) }()
	t.Cleanup(func() { s.kill() })
	done := make(chan int)
	go func() { <-s.exited; close(done) }()
	m := waitFor(t, &stdout, listeningRE, done)
	s.base = "http://127.0.0.1:" + m[2]
	return s
}

// kill sends SIGKILL and waits for the process to be gone.
func (s *binServer) kill() {
	select {
	case <-s.exited:
		return
	default:
	}
	s.cmd.Process.Kill()
	<-s.exited
}

// acked is what the server acknowledged with a 200.
type acked struct {
	mu       sync.Mutex
	records  map[string]string // rkey -> CID of an acknowledged create
	deleted  map[string]bool   // rkey of an acknowledged delete
	tried    map[string]bool   // rkey of a delete sent but not acknowledged
	appPass  map[string]bool   // name -> exists (false: acknowledged revocation)
	revTried map[string]bool   // name of a revocation sent but not acknowledged
	blobs    map[string]string // rkey of an acknowledged create -> CID of the blob it embeds
	// pref is the value of the last acknowledged preference change (""
	// before the first); prefTried the one sent after it without an
	// answer, which may or may not have landed.
	pref, prefTried string
	prefChanges     int
	attempts        int
}

// TestCrashSafety runs the real binary under four concurrent writers (one
// of them uploading a blob for each post it writes, one deleting), an
// operator creating and revoking app passwords and a client changing its
// preferences, kills it with SIGKILL at random moments and restarts it
// each time. After every restart every acknowledged change must be there
// (records with their CIDs, deletions, app passwords, the preferences,
// every referenced blob with its bytes) and pds check must pass; at the
// end a firehose replay from 0 is a gap-free chain of verifiable commits
// ending at the current commit.
func TestCrashSafety(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and crashes it 20 times")
	}
	t.Parallel()
	bin := buildPDS(t, "crash-test")
	dir := filepath.Join(t.TempDir(), "data")
	initDir(t, dir, "--password", testPassword)
	cfg, err := config.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	token := cfg.AdminToken
	key, err := cfg.SigningKeyParsed()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := key.PublicKey()
	if err != nil {
		t.Fatal(err)
	}

	ack := &acked{records: map[string]string{}, deleted: map[string]bool{}, tried: map[string]bool{}, appPass: map[string]bool{}, revTried: map[string]bool{}, blobs: map[string]string{}}
	client := &http.Client{Timeout: 10 * time.Second}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 8))
	var session string // an account session: blobs are uploaded with one
	const cycles = 20
	for cycle := 0; cycle < cycles; cycle++ {
		srv := startBin(t, bin, dir)
		if cycle == 0 {
			session = login(t, client, srv.base, cfg.Handle)
		} else {
			verifyAcked(t, client, srv.base, cfg.DID, token, dir, ack)
		}
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				name := fmt.Sprintf("c%dw%d", cycle, w)
				if w == 3 {
					blobWriter(ctx, client, srv.base, cfg.DID, token, session, name, ack)
					return
				}
				writer(ctx, client, srv.base, cfg.DID, token, name, w == 0, ack)
			}()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			operator(ctx, client, srv.base, token, fmt.Sprintf("c%d", cycle), ack)
		}()
		wg.Add(1)
		go func() {
			defer wg.Done()
			prefsWriter(ctx, client, srv.base, token, fmt.Sprintf("c%d", cycle), ack)
		}()
		time.Sleep(time.Duration(40+rng.IntN(260)) * time.Millisecond)
		srv.kill()
		cancel()
		wg.Wait()
	}

	srv := startBin(t, bin, dir)
	verifyAcked(t, client, srv.base, cfg.DID, token, dir, ack)
	ack.mu.Lock()
	defer ack.mu.Unlock()
	t.Logf("%d write attempts, %d records (%d with a blob) and %d deletions acknowledged, %d app-password changes, %d preference changes",
		ack.attempts, len(ack.records), len(ack.blobs), len(ack.deleted), len(ack.appPass), ack.prefChanges)
	if len(ack.records) < cycles || len(ack.blobs) == 0 || ack.prefChanges == 0 {
		t.Fatalf("only %d writes, %d blob posts and %d preference changes were acknowledged over %d cycles", len(ack.records), len(ack.blobs), ack.prefChanges, cycles)
	}

	// The firehose, replayed from 0, is a gap-free chain ending at the
	// current commit.
	var head struct {
		CID string `json:"cid"`
		Rev string `json:"rev"`
	}
	if code := xrpcCall(t, client, http.MethodGet, srv.base, "com.atproto.sync.getLatestCommit?did="+url.QueryEscape(cfg.DID), "", nil, &head); code != http.StatusOK {
		t.Fatalf("getLatestCommit = %d", code)
	}
	verifyReplay(t, srv.base, pub, head.CID, head.Rev)
}

// verifyAcked checks, after a restart, that every acknowledged change is
// there: records with their CIDs, deletions, app passwords, the latest
// preferences, and the bytes of every blob an acknowledged record embeds;
// and that pds check, run against the serving data directory, passes.
func verifyAcked(t *testing.T, client *http.Client, base, did, token, dir string, ack *acked) {
	t.Helper()
	ack.mu.Lock()
	defer ack.mu.Unlock()

	// Every acknowledged write is there, with the acknowledged CID.
	present := listAll(t, client, base, did)
	for rkey, c := range ack.records {
		got, ok := present[rkey]
		switch {
		case ack.deleted[rkey] && ok:
			t.Errorf("record %s: deletion was acknowledged but it is still there", rkey)
		case ack.deleted[rkey]:
		case !ok && ack.tried[rkey]:
			// An unacknowledged delete may have landed before the kill.
		case !ok:
			t.Errorf("record %s: acknowledged with %s but missing after the crashes", rkey, c)
		case got != c:
			t.Errorf("record %s: acknowledged with %s but holds %s", rkey, c, got)
		}
	}
	// App passwords: acknowledged creations exist, revocations stuck.
	var list struct {
		Passwords []struct {
			Name string `json:"name"`
		} `json:"passwords"`
	}
	if code := xrpcCall(t, client, http.MethodGet, base, "com.atproto.server.listAppPasswords", token, nil, &list); code != http.StatusOK {
		t.Fatalf("listAppPasswords = %d", code)
	}
	have := map[string]bool{}
	for _, p := range list.Passwords {
		have[p.Name] = true
	}
	for name, exists := range ack.appPass {
		if ack.revTried[name] && !have[name] {
			// An unacknowledged revocation landed before the kill.
			ack.appPass[name] = false
			continue
		}
		if have[name] != exists {
			t.Errorf("app password %s: present %v, but the last acknowledged change says %v", name, have[name], exists)
		}
	}

	// Preferences: the last acknowledged change, or the unanswered one
	// after it.
	if got := getPref(t, client, base, token); got != ack.pref && (ack.prefTried == "" || got != ack.prefTried) {
		t.Errorf("preferences hold %q, but the last acknowledged change set %q (and %q was sent after it)", got, ack.pref, ack.prefTried)
	} else {
		ack.pref, ack.prefTried = got, ""
	}

	// Blobs: every acknowledged post's blob is served whole.
	for rkey, c := range ack.blobs {
		if ack.deleted[rkey] {
			continue
		}
		resp, err := client.Get(base + "/xrpc/com.atproto.sync.getBlob?" + url.Values{"did": {did}, "cid": {c}}.Encode())
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Errorf("blob %s of record %s: getBlob = %d %v", c, rkey, resp.StatusCode, err)
			continue
		}
		if got, err := blob.Prefix.Sum(body); err != nil || got.String() != c {
			t.Errorf("blob %s of record %s: getBlob served %d bytes hashing to %v", c, rkey, len(body), got)
		}
	}

	// pds check, online, finds nothing wrong.
	if r := run(t, nil, "check", "--data-dir", dir); r.code != 0 {
		t.Fatalf("pds check after a crash: %v", r)
	}
}

// login opens an account session and returns its access token.
func login(t *testing.T, client *http.Client, base, handle string) string {
	t.Helper()
	var out struct {
		AccessJwt string `json:"accessJwt"`
	}
	code, body := post(context.Background(), client, base, "com.atproto.server.createSession", "",
		map[string]string{"identifier": handle, "password": testPassword})
	if code != http.StatusOK || json.Unmarshal(body, &out) != nil || out.AccessJwt == "" {
		t.Fatalf("createSession = %d %s", code, body)
	}
	return out.AccessJwt
}

// prefTags reads the interests preference the prefs writer sets.
func getPref(t *testing.T, client *http.Client, base, token string) string {
	t.Helper()
	var out struct {
		Preferences []struct {
			Type string   `json:"$type"`
			Tags []string `json:"tags"`
		} `json:"preferences"`
	}
	if code := xrpcCall(t, client, http.MethodGet, base, "app.bsky.actor.getPreferences", token, nil, &out); code != http.StatusOK {
		t.Fatalf("getPreferences = %d", code)
	}
	for _, p := range out.Preferences {
		if p.Type == "app.bsky.actor.defs#interestsPref" && len(p.Tags) == 1 {
			return p.Tags[0]
		}
	}
	return ""
}

// prefsWriter replaces the preferences, one change after another.
func prefsWriter(ctx context.Context, client *http.Client, base, token, prefix string, ack *acked) {
	for n := 0; ctx.Err() == nil; n++ {
		v := fmt.Sprintf("%s-%d", prefix, n)
		ack.mu.Lock()
		ack.prefTried = v
		ack.mu.Unlock()
		code, _ := post(ctx, client, base, "app.bsky.actor.putPreferences", token, map[string]any{
			"preferences": []any{
				map[string]any{"$type": "app.bsky.actor.defs#interestsPref", "tags": []string{v}},
				map[string]any{"$type": "app.bsky.actor.defs#adultContentPref", "enabled": n%2 == 0},
			}})
		if code != http.StatusOK {
			return
		}
		ack.mu.Lock()
		ack.pref, ack.prefTried = v, ""
		ack.prefChanges++
		ack.mu.Unlock()
		// A change now and then, not a flood.
		select {
		case <-ctx.Done():
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// blobWriter uploads a small image and writes a post embedding it, over
// and over; an acknowledged post records its blob.
func blobWriter(ctx context.Context, client *http.Client, base, did, token, session, name string, ack *acked) {
	for n := 0; ctx.Err() == nil; n++ {
		ack.mu.Lock()
		ack.attempts++
		ack.mu.Unlock()
		data := append([]byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"), fmt.Sprintf("%s-%d %s", name, n, strings.Repeat("x", 2000))...)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/xrpc/com.atproto.repo.uploadBlob", bytes.NewReader(data))
		if err != nil {
			return
		}
		req.Header.Set("Content-Type", "image/png")
		req.Header.Set("Authorization", "Bearer "+session)
		resp, err := client.Do(req)
		if err != nil {
			return
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			return
		}
		var up struct {
			Blob json.RawMessage `json:"blob"`
		}
		if json.Unmarshal(body, &up) != nil {
			return
		}
		var ref struct {
			Ref struct {
				Link string `json:"$link"`
			} `json:"ref"`
		}
		json.Unmarshal(up.Blob, &ref)
		rkey, cid, code := createPost(ctx, client, base, did, token, map[string]any{"text": name + "-" + fmt.Sprint(n), "createdAt": "2026-01-01T00:00:00.000Z",
			"embed": map[string]any{"$type": "app.bsky.embed.images", "images": []any{map[string]any{"alt": "", "image": up.Blob}}}})
		if code == 0 {
			return
		}
		if rkey == "" {
			continue
		}
		ack.mu.Lock()
		ack.records[rkey] = cid
		ack.blobs[rkey] = ref.Ref.Link
		ack.mu.Unlock()
	}
}

// createPost creates one post and returns its record key and CID, with
// an empty key when the write was not acknowledged; code is 0 when the
// server could not be reached.
func createPost(ctx context.Context, client *http.Client, base, did, token string, record map[string]any) (rkey, cid string, code int) {
	code, body := post(ctx, client, base, "com.atproto.repo.createRecord", token, map[string]any{
		"repo": did, "collection": "app.bsky.feed.post", "record": record})
	if code != http.StatusOK {
		return "", "", code
	}
	var out struct {
		URI string `json:"uri"`
		CID string `json:"cid"`
	}
	if json.Unmarshal(body, &out) != nil {
		return "", "", code
	}
	return out.URI[strings.LastIndex(out.URI, "/")+1:], out.CID, code
}

// writer creates records until ctx ends or the server goes away; the
// deleting writer also deletes its own acknowledged records now and then.
func writer(ctx context.Context, client *http.Client, base, did, token, name string, deletes bool, ack *acked) {
	var mine []string
	for n := 0; ctx.Err() == nil; n++ {
		ack.mu.Lock()
		ack.attempts++
		ack.mu.Unlock()
		if deletes && n%3 == 2 && len(mine) > 0 {
			rkey := mine[0]
			mine = mine[1:]
			code, _ := post(ctx, client, base, "com.atproto.repo.deleteRecord", token, map[string]any{
				"repo": did, "collection": "app.bsky.feed.post", "rkey": rkey})
			ack.mu.Lock()
			if code == http.StatusOK {
				ack.deleted[rkey] = true
			} else {
				ack.tried[rkey] = true
			}
			ack.mu.Unlock()
			if code == 0 {
				return
			}
			continue
		}
		rkey, cid, code := createPost(ctx, client, base, did, token, map[string]any{"text": name + "-" + fmt.Sprint(n), "createdAt": "2026-01-01T00:00:00.000Z"})
		if code == 0 {
			return
		}
		if rkey == "" {
			continue
		}
		ack.mu.Lock()
		ack.records[rkey] = cid
		ack.mu.Unlock()
		mine = append(mine, rkey)
	}
}

// operator creates app passwords and revokes every other one.
func operator(ctx context.Context, client *http.Client, base, token, prefix string, ack *acked) {
	for n := 0; ctx.Err() == nil; n++ {
		name := fmt.Sprintf("%s-%d", prefix, n)
		code, _ := post(ctx, client, base, "com.atproto.server.createAppPassword", token, map[string]any{"name": name})
		if code != http.StatusOK {
			return
		}
		ack.mu.Lock()
		ack.appPass[name] = true
		ack.mu.Unlock()
		if n%2 == 1 {
			code, _ := post(ctx, client, base, "com.atproto.server.revokeAppPassword", token, map[string]any{"name": name})
			if code != http.StatusOK {
				ack.mu.Lock()
				ack.revTried[name] = true
				ack.mu.Unlock()
				return
			}
			ack.mu.Lock()
			ack.appPass[name] = false
			ack.mu.Unlock()
		}
	}
}

// post sends an XRPC procedure call; code 0 means no answer (the server
// is gone or ctx ended).
func post(ctx context.Context, client *http.Client, base, nsid, token string, in any) (int, []byte) {
	b, _ := json.Marshal(in)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/xrpc/"+nsid, bytes.NewReader(b))
	if err != nil {
		return 0, nil
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		// The answer was cut off: not an acknowledgement.
		return 0, nil
	}
	return resp.StatusCode, body
}

// verifyReplay subscribes from cursor 0 and checks that the events are
// numbered 1, 2, 3, ... without a gap, that every commit verifies with
// indigo (its signature with pub, its ops against prevData) and continues
// the previous one, and that the last commit is the current head.
func verifyReplay(t *testing.T, base string, pub atcrypto.PublicKey, headCID, headRev string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, strings.Replace(base, "http://", "ws://", 1)+"/xrpc/com.atproto.sync.subscribeRepos?cursor=0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	c.SetReadLimit(10 << 20)
	var (
		seq              int64
		prevRev, prevCID string
		prevData         string
		commits          int
	)
	for prevCID != headCID {
		_, data, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("firehose ended after seq %d (last commit %s, head %s): %v", seq, prevCID, headCID, err)
		}
		f, err := parseFrame(data)
		if err != nil {
			t.Fatal(err)
		}
		if f.Op != 1 {
			t.Fatalf("error frame after seq %d: %s", seq, f.Body)
		}
		r := bytes.NewReader(f.Body)
		var got int64
		// signedCommit loads the commit a CAR is rooted at and checks its
		// signature against the account's key.
		signedCommit := func(car []byte) (*atrepo.Commit, string) {
			commit, cc, err := atrepo.LoadCommitFromCAR(ctx, bytes.NewReader(car))
			if err != nil {
				t.Fatalf("seq %d: %s CAR: %v", got, f.T, err)
			}
			if err := commit.VerifySignature(pub); err != nil {
				t.Fatalf("seq %d: signature: %v", got, err)
			}
			return commit, cc.String()
		}
		switch f.T {
		case "#commit":
			var ev comatproto.SyncSubscribeRepos_Commit
			if err := ev.UnmarshalCBOR(r); err != nil {
				t.Fatal(err)
			}
			got = ev.Seq
			commit, cc := signedCommit(ev.Blocks)
			if ev.Since == nil || *ev.Since != prevRev || ev.PrevData == nil || ev.PrevData.String() != prevData {
				t.Fatalf("seq %d: commit %s does not continue rev %s / data %s", got, cc, prevRev, prevData)
			}
			if _, err := atrepo.VerifyCommitMessage(ctx, &ev); err != nil {
				t.Fatalf("seq %d: indigo rejects the commit: %v", got, err)
			}
			prevRev, prevCID, prevData = ev.Rev, cc, commit.Data.String()
			commits++
		case "#sync":
			var ev comatproto.SyncSubscribeRepos_Sync
			if err := ev.UnmarshalCBOR(r); err != nil {
				t.Fatal(err)
			}
			got = ev.Seq
			commit, cc := signedCommit(ev.Blocks)
			prevRev, prevCID, prevData = ev.Rev, cc, commit.Data.String()
		default:
			got = f.mustSeq(t)
		}
		if got != seq+1 {
			t.Fatalf("seq %d follows %d: a gap or a repeat", got, seq)
		}
		seq = got
	}
	if prevRev != headRev {
		t.Fatalf("replay ends at rev %s, head is %s", prevRev, headRev)
	}
	// Nothing follows the current commit.
	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancelShort()
	if _, data, err := c.Read(short); err == nil {
		t.Fatalf("an event follows the current commit: %x", data[:min(len(data), 64)])
	}
	t.Logf("firehose replay: %d events, %d verified commits, ending at %s", seq, commits, headCID)
}
