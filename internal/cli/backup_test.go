package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"stratus/internal/backup"
	"stratus/internal/config"
	"stratus/internal/pdstest"
	"stratus/internal/server"
	"stratus/internal/sqlite"
)

// TestBackupRestore takes backups (a directory and a .tar.gz) while a
// writer keeps committing, restores them into new data directories and
// checks that each restored repository passes pds check, holds exactly the
// records acknowledged up to the backup's rev, continues the firehose past
// the old seqs and announces itself with #identity, #account and #sync.
func TestBackupRestore(t *testing.T) {
	t.Parallel()
	s, _ := seeded(t)
	// A post with an image: its blob must travel with the backup.
	img := uploadPNG(t, s, s.Login(t, s.Handle(), pdstest.Password).AccessJWT, pngBytes(3, 5000))
	s.CreateRecord(t, "app.bsky.feed.post", "", imagePost("with an image", img))

	// rev of each acknowledged create, by rkey.
	var mu sync.Mutex
	revs := map[string]string{}
	cids := map[string]string{}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for n := 0; ctx.Err() == nil; n++ {
			code, body := s.Do(t, http.MethodPost, "com.atproto.repo.createRecord", nil, map[string]any{
				"repo": s.DID(), "collection": "app.bsky.feed.post", "record": pdstest.Post("under load"),
			}, s.AdminToken())
			if code != http.StatusOK {
				t.Errorf("write under backup: %d %s", code, body)
				return
			}
			var out pdstest.WriteResult
			json.Unmarshal(body, &out)
			mu.Lock()
			revs[out.RKey()], cids[out.RKey()] = out.Commit.Rev, out.CID
			mu.Unlock()
		}
	}()

	root := t.TempDir()
	dests := []string{filepath.Join(root, "dir-backup"), filepath.Join(root, "backup.tar.gz")}
	for _, d := range dests {
		if r := run(t, nil, "backup", "--data-dir", s.DataDir(), d); r.code != 0 {
			cancel()
			wg.Wait()
			t.Fatalf("backup to %s: %v", d, r)
		}
	}
	cancel()
	wg.Wait()
	st, err := os.Stat(dests[1])
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("archive mode %v, want 0600", st.Mode().Perm())
	}
	for name, want := range map[string]os.FileMode{config.SecretsFile: 0o600, config.DatabaseFile: 0o600, config.SettingsFile: 0o644} {
		if st, err := os.Stat(filepath.Join(dests[0], name)); err != nil || st.Mode().Perm() != want {
			t.Errorf("backup %s: %v, want mode %v", name, err, want)
		}
	}
	oldSeq := s.LastSeq(t)

	for _, src := range dests {
		t.Run(filepath.Base(src), func(t *testing.T) {
			// Not into a non-empty directory.
			busy := t.TempDir()
			os.WriteFile(filepath.Join(busy, "x"), nil, 0o600)
			if r := run(t, nil, "restore", "--data-dir", busy, src); r.code == 0 || !strings.Contains(r.stderr, "not empty") {
				t.Errorf("restore into a non-empty directory: %v", r)
			}

			dir := filepath.Join(t.TempDir(), "restored")
			r := run(t, nil, "restore", "--data-dir", dir, src)
			if r.code != 0 {
				t.Fatalf("restore: %v", r)
			}
			if st, err := os.Stat(filepath.Join(dir, config.SecretsFile)); err != nil || st.Mode().Perm() != 0o600 {
				t.Errorf("restored secrets: %v", err)
			}
			var m backup.Manifest
			mb, err := os.ReadFile(filepath.Join(dir, backup.ManifestFile))
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(mb, &m); err != nil {
				t.Fatal(err)
			}
			if r := run(t, nil, "check", "--data-dir", dir); r.code != 0 {
				t.Fatalf("check of the restored directory: %v", r)
			}
			in, err := sqlite.Inspect(context.Background(), filepath.Join(dir, config.DatabaseFile), false)
			if err != nil {
				t.Fatal(err)
			}
			counter, _ := in.SeqCounter(context.Background())
			in.Close()

			cfg, err := config.Load(dir)
			if err != nil {
				t.Fatal(err)
			}
			cfg.Port = 0
			srv, err := server.Open(context.Background(), cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			if err := srv.Start(); err != nil {
				t.Fatal(err)
			}
			did := syntax.DID(cfg.DID)
			head, err := srv.Repos().Head(context.Background(), did)
			if err != nil {
				t.Fatal(err)
			}
			rs := m.Repos[cfg.DID]
			if rs.Rev == "" || head.Rev.String() <= rs.Rev {
				t.Errorf("restored head rev %s is not after the backup's %s", head.Rev, rs.Rev)
			}
			// The restore's own events come after every seq the old
			// server handed out, by the margin.
			if counter <= oldSeq || counter < m.Seq+cliDefaultSeqMargin {
				t.Errorf("seq counter %d after restore, old server was at %d, backup at %d", counter, oldSeq, m.Seq)
			}

			// Records: exactly the acknowledged ones up to the backup's rev.
			base := "http://127.0.0.1:" + strconv.Itoa(srv.Port())
			resp, err := http.Get(base + "/xrpc/com.atproto.sync.getBlob?" + url.Values{"did": {cfg.DID}, "cid": {img.CID}}.Encode())
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || !bytes.Equal(body, img.data) {
				t.Errorf("restored getBlob = %d, %d bytes", resp.StatusCode, len(body))
			}
			got := listAll(t, http.DefaultClient, base, cfg.DID)
			mu.Lock()
			defer mu.Unlock()
			for rkey, rev := range revs {
				c, ok := got[rkey]
				switch {
				case rev <= rs.Rev && !ok:
					t.Errorf("record %s (rev %s) missing from a backup at rev %s", rkey, rev, rs.Rev)
				case rev <= rs.Rev && c != cids[rkey]:
					t.Errorf("record %s holds %s, acknowledged %s", rkey, c, cids[rkey])
				case rev > rs.Rev && ok:
					t.Errorf("record %s (rev %s) is in a backup taken at rev %s", rkey, rev, rs.Rev)
				}
			}

			// A subscriber with the old server's cursor gets the
			// announcement of the restored state.
			var frames []string
			ws := dialFirehose(t, base, oldSeq)
			for len(frames) < 3 {
				f := readFirehose(t, ws)
				frames = append(frames, f.T)
			}
			if strings.Join(frames, " ") != "#identity #account #sync" {
				t.Errorf("after restore the firehose says %v", frames)
			}
		})
	}
}

// cliDefaultSeqMargin mirrors cli.DefaultSeqMargin.
const cliDefaultSeqMargin = 1_000_000

// TestExportCAR checks that pds export --car writes exactly the bytes
// getRepo serves, while the server runs.
func TestExportCAR(t *testing.T) {
	t.Parallel()
	s, _ := seeded(t)
	file := filepath.Join(t.TempDir(), "repo.car")
	if r := run(t, nil, "export", "--car", file, "--data-dir", s.DataDir()); r.code != 0 {
		t.Fatalf("export: %v", r)
	}
	got, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	code, want := s.Do(t, http.MethodGet, "com.atproto.sync.getRepo", url.Values{"did": {s.DID()}}, nil, "")
	if code != http.StatusOK {
		t.Fatalf("getRepo = %d", code)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("export wrote %d bytes, getRepo serves %d different ones", len(got), len(want))
	}
	if r := run(t, nil, "export", "--data-dir", s.DataDir()); r.code != 2 {
		t.Errorf("export without --car: %v", r)
	}
}
