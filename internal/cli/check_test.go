package cli_test

import (
	"context"
	"database/sql"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"

	"stratus/internal/config"
	"stratus/internal/pdstest"
	"stratus/internal/server"
	_ "stratus/internal/sqlite" // registers the database driver for direct edits
)

// execSQL changes the database of a data directory behind the server's
// back, as damage would.
func execSQL(t *testing.T, dir, q string, args ...any) int64 {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, config.DatabaseFile)+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	res, err := db.Exec(q, args...)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	n, _ := res.RowsAffected()
	return n
}

// seeded starts a server with a few commits of every kind: creates, an
// update, a delete, an app password and a session.
func seeded(t *testing.T) (*pdstest.Server, []pdstest.WriteResult) {
	t.Helper()
	s := pdstest.NewServer(t)
	var recs []pdstest.WriteResult
	for i := 0; i < 6; i++ {
		recs = append(recs, s.CreateRecord(t, "app.bsky.feed.post", "", pdstest.Post("post "+string(rune('a'+i)))))
	}
	s.Call(t, http.MethodPost, "com.atproto.repo.putRecord", nil, map[string]any{
		"repo": s.DID(), "collection": "app.bsky.feed.post", "rkey": recs[1].RKey(), "record": pdstest.Post("edited"),
	}, s.AdminToken(), &recs[1])
	s.Call(t, http.MethodPost, "com.atproto.repo.deleteRecord", nil, map[string]any{
		"repo": s.DID(), "collection": "app.bsky.feed.post", "rkey": recs[5].RKey(),
	}, s.AdminToken(), nil)
	recs = recs[:5]
	s.Call(t, http.MethodPost, "com.atproto.server.createAppPassword", nil, map[string]any{"name": "feeds"}, s.AdminToken(), nil)
	s.Login(t, s.Handle(), pdstest.Password)
	return s, recs
}

func cidBytes(t *testing.T, s string) []byte {
	t.Helper()
	c, err := cid.Decode(s)
	if err != nil {
		t.Fatal(err)
	}
	return c.Bytes()
}

// TestCheckHealthy runs pds check against a data directory whose server is
// serving: it reads a consistent snapshot and finds nothing.
func TestCheckHealthy(t *testing.T) {
	t.Parallel()
	s, recs := seeded(t)
	r := run(t, nil, "check", "--data-dir", s.DataDir())
	if r.code != 0 {
		t.Fatalf("check of a healthy repository: %v", r)
	}
	head := s.LatestCommit(t)
	for _, want := range []string{"ok: no problems found", "commit " + head.CID + " rev " + head.Rev, "5 records", "6 blocks"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("check output lacks %q:\n%s", want, r.stdout)
		}
	}
	_ = recs
}

// TestCheckCorruption damages a repository in the ways storage can be
// damaged and checks that pds check names each problem, that the server
// refuses the repository (on start, and on the next write once its cached
// tree is dropped), and what --repair can derive back.
func TestCheckCorruption(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		// damage changes the data directory and returns the lines pds
		// check must print.
		damage func(t *testing.T, s *pdstest.Server, recs []pdstest.WriteResult) []string
		// refused: the server must refuse the repository afterwards.
		refused bool
		// repaired: --repair fixes it from the firehose log.
		repaired bool
	}{
		{
			name: "record block deleted",
			damage: func(t *testing.T, s *pdstest.Server, recs []pdstest.WriteResult) []string {
				execSQL(t, s.DataDir(), "DELETE FROM repo_blocks WHERE cid = ?", cidBytes(t, recs[2].CID))
				return []string{"record app.bsky.feed.post/" + recs[2].RKey() + ": block " + recs[2].CID + " is missing"}
			},
			refused: true, repaired: true,
		},
		{
			name: "commit block deleted",
			damage: func(t *testing.T, s *pdstest.Server, recs []pdstest.WriteResult) []string {
				head := s.LatestCommit(t)
				execSQL(t, s.DataDir(), "UPDATE repo_roots SET commit_data = NULL WHERE commit_cid = ?", cidBytes(t, head.CID))
				return []string{"commit block " + head.CID + " is missing"}
			},
			refused: true, repaired: true,
		},
		{
			name: "index row deleted",
			damage: func(t *testing.T, s *pdstest.Server, recs []pdstest.WriteResult) []string {
				execSQL(t, s.DataDir(), "DELETE FROM records WHERE rkey = ?", recs[0].RKey())
				return []string{"MST rebuilt from the 4 indexed records", "block " + recs[0].CID + " is stored but neither the commit nor an indexed record"}
			},
			refused: true, repaired: true,
		},
		{
			name: "index row points at another record",
			damage: func(t *testing.T, s *pdstest.Server, recs []pdstest.WriteResult) []string {
				execSQL(t, s.DataDir(), "UPDATE records SET cid = ? WHERE rkey = ?", cidBytes(t, recs[3].CID), recs[0].RKey())
				return []string{"MST rebuilt from the 5 indexed records"}
			},
			refused: true, repaired: true,
		},
		{
			name: "record block garbled",
			damage: func(t *testing.T, s *pdstest.Server, recs []pdstest.WriteResult) []string {
				execSQL(t, s.DataDir(), "UPDATE repo_blocks SET data = x'a0' WHERE cid = ?", cidBytes(t, recs[4].CID))
				return []string{"block " + recs[4].CID + ": contents do not hash to its CID", "record app.bsky.feed.post/" + recs[4].RKey() + ": block " + recs[4].CID + " is damaged"}
			},
			repaired: true,
		},
		{
			name: "revocation half applied",
			damage: func(t *testing.T, s *pdstest.Server, recs []pdstest.WriteResult) []string {
				s.Login(t, s.Handle(), newAppPassword(t, s, "half"))
				if n := execSQL(t, s.DataDir(), "DELETE FROM app_passwords WHERE name = 'half'"); n != 1 {
					t.Fatalf("deleted %d app passwords", n)
				}
				return []string{"belongs to an app password that no longer exists"}
			},
			repaired: true,
		},
		{
			name: "block lost beyond the firehose log",
			damage: func(t *testing.T, s *pdstest.Server, recs []pdstest.WriteResult) []string {
				execSQL(t, s.DataDir(), "DELETE FROM firehose_events")
				execSQL(t, s.DataDir(), "DELETE FROM repo_blocks WHERE cid = ?", cidBytes(t, recs[2].CID))
				return []string{"record app.bsky.feed.post/" + recs[2].RKey() + ": block " + recs[2].CID + " is missing"}
			},
			refused: true, repaired: false,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, recs := seeded(t)
			want := tc.damage(t, s, recs)
			r := run(t, nil, "check", "--data-dir", s.DataDir())
			if r.code != 1 {
				t.Fatalf("check of a damaged repository: %v", r)
			}
			for _, w := range want {
				if !strings.Contains(r.stdout, w) {
					t.Errorf("check output lacks %q:\n%s", w, r.stdout)
				}
			}
			if tc.refused {
				// The running server: its cached tree goes, as after a
				// restart; the next write must fail, naming the damage.
				s.Server().Repos().Forget(syntax.DID(s.DID()))
				code, body := s.Do(t, http.MethodPost, "com.atproto.repo.createRecord", nil, map[string]any{
					"repo": s.DID(), "collection": "app.bsky.feed.post", "record": pdstest.Post("after damage"),
				}, s.AdminToken())
				if code != http.StatusInternalServerError || !strings.Contains(string(body), "repository is damaged") {
					t.Errorf("write to a damaged repository = %d %s", code, body)
				}
				code, body = s.Do(t, http.MethodGet, "com.atproto.sync.getRepo", map[string][]string{"did": {s.DID()}}, nil, "")
				if code != http.StatusInternalServerError {
					t.Errorf("getRepo of a damaged repository = %d %.200s", code, body)
				}
				// A new server on the directory refuses to start.
				cfg := s.Config()
				if srv, err := server.Open(context.Background(), &cfg, nil); err == nil {
					srv.Close()
					t.Errorf("server opened a damaged repository")
				} else if !strings.Contains(err.Error(), "pds check") {
					t.Errorf("refusal does not point to pds check: %v", err)
				}
			}
			rr := run(t, nil, "check", "--repair", "--data-dir", s.DataDir())
			if tc.repaired != (rr.code == 0) {
				t.Fatalf("check --repair (repairable %v): %v", tc.repaired, rr)
			}
			if !tc.repaired {
				if !strings.Contains(rr.stdout, "restore from a backup") && !strings.Contains(rr.stdout, "problem") {
					t.Errorf("unrepairable damage not explained:\n%s", rr.stdout)
				}
				return
			}
			if !strings.Contains(rr.stdout, "repaired: ") || !strings.Contains(rr.stdout, "ok: no problems found") {
				t.Errorf("repair output:\n%s", rr.stdout)
			}
			// The repaired repository serves and takes writes again.
			s.Server().Repos().Forget(syntax.DID(s.DID()))
			s.CreateRecord(t, "app.bsky.feed.post", "", pdstest.Post("after repair"))
			if r := run(t, nil, "check", "--data-dir", s.DataDir()); r.code != 0 {
				t.Fatalf("check after repair and a write: %v", r)
			}
		})
	}
}

// newAppPassword creates an app password and returns it.
func newAppPassword(t *testing.T, s *pdstest.Server, name string) string {
	t.Helper()
	var out struct {
		Password string `json:"password"`
	}
	s.Call(t, http.MethodPost, "com.atproto.server.createAppPassword", nil, map[string]any{"name": name}, s.AdminToken(), &out)
	return out.Password
}

// TestCheckGarbledPage overwrites pages of a copy of the database file
// (the server's own copy keeps running) and checks that pds check reports
// the damaged pages and the server refuses to start on it.
func TestCheckGarbledPage(t *testing.T) {
	t.Parallel()
	s, _ := seeded(t)
	for i := 0; i < 40; i++ {
		s.CreateRecord(t, "app.bsky.feed.post", "", pdstest.Post(strings.Repeat("filler ", 40)))
	}
	dir := t.TempDir()
	if r := run(t, nil, "backup", "--data-dir", s.DataDir(), dir); r.code != 0 {
		t.Fatalf("backup: %v", r)
	}
	db := filepath.Join(dir, config.DatabaseFile)
	b, err := os.ReadFile(db)
	if err != nil {
		t.Fatal(err)
	}
	const page = 4096
	if len(b) < 8*page {
		t.Fatalf("database is only %d bytes", len(b))
	}
	// Garble the second half of every page in the second half of the
	// file: b-tree cells of the tables holding the repository, written
	// after the schema (whose pages come first, however many tables the
	// migrations create).
	for off := max(2*page, len(b)/page/2*page); off+page <= len(b); off += page {
		for i := off + page/2; i < off+page; i++ {
			b[i] ^= 0x5a
		}
	}
	if err := os.WriteFile(db, b, 0o600); err != nil {
		t.Fatal(err)
	}
	r := run(t, nil, "check", "--data-dir", dir)
	if r.code != 1 {
		t.Fatalf("check of a garbled database: %v", r)
	}
	t.Logf("check output:\n%s", r.stdout)
	if !strings.Contains(r.stdout, "database: ") || !strings.Contains(r.stdout, "page") {
		t.Errorf("check does not name the damaged pages:\n%s", r.stdout)
	}
	cfg := s.Config()
	cfg.DataDir = dir
	if srv, err := server.Open(context.Background(), &cfg, nil); err == nil {
		srv.Close()
		t.Fatal("server opened a garbled database")
	} else {
		t.Logf("server refused: %v", err)
	}

	// Truncated in the middle of a page.
	if err := os.WriteFile(db, b[:len(b)-page-100], 0o600); err != nil {
		t.Fatal(err)
	}
	if r := run(t, nil, "check", "--data-dir", dir); r.code != 1 || !strings.Contains(r.stdout, "database") {
		t.Errorf("check of a truncated database: %v", r)
	}
}
