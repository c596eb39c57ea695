//go:build unix

package cli_test

import (
	"encoding/json"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// pwRE matches an app password (or a generated account password) in
// text; pwFullRE is the whole-value form.
var (
	pwRE     = regexp.MustCompile(`\b[a-z2-7]{4}(?:-[a-z2-7]{4}){3}\b`)
	pwFullRE = regexp.MustCompile(`^[a-z2-7]{4}(-[a-z2-7]{4}){3}$`)
)

// appPassword is an entry of app-password create --json / list --json.
type appPassword struct {
	Name       string `json:"name"`
	Password   string `json:"password"`
	CreatedAt  string `json:"createdAt"`
	Privileged bool   `json:"privileged"`
}

// passwordIn returns the one password printed in text.
func passwordIn(t *testing.T, text string) string {
	t.Helper()
	all := pwRE.FindAllString(text, -1)
	if len(all) != 1 {
		t.Fatalf("want exactly one xxxx-xxxx-xxxx-xxxx password in:\n%s", text)
	}
	return all[0]
}

// listJSON returns the app passwords as list --json prints them.
func (p *pdsProc) listJSON(t *testing.T) []appPassword {
	t.Helper()
	r := p.mustAdmin(t, "app-password", "list", "--json")
	var raw []map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &raw); err != nil {
		t.Fatalf("list --json is not a JSON array: %v\n%s", err, r.stdout)
	}
	var aps []appPassword
	if err := json.Unmarshal([]byte(r.stdout), &aps); err != nil {
		t.Fatal(err)
	}
	for _, m := range raw {
		if _, ok := m["password"]; ok {
			t.Errorf("list --json shows a password: %s", r.stdout)
		}
	}
	return aps
}

func names(aps []appPassword) []string {
	var out []string
	for _, ap := range aps {
		out = append(out, ap.Name)
	}
	return out
}

func testAppPasswordCreate(t *testing.T, bin string) {
	p := startPDS(t, bin)

	r := p.mustAdmin(t, "app-password", "create", "--name", "my-feed-builder")
	pw := passwordIn(t, r.stdout)
	if !pwFullRE.MatchString(pw) {
		t.Errorf("password %q is not xxxx-xxxx-xxxx-xxxx", pw)
	}
	for _, want := range []string{`"my-feed-builder"`, "Save it now: it will not be shown again"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, r.stdout)
		}
	}
	once(t, r.stdout, pw, "the password")
	noSecret(t, r, "admin token", p.acct.AdminToken)
	// The client signs in with the handle and the app password.
	p.mustLogin(t, pw)

	// --json, with the -n shorthand and --privileged.
	r = p.mustAdmin(t, "app-password", "create", "-n", "mobile-poster-bot", "--json", "--privileged")
	var ap appPassword
	keys := decodeOne(t, r.stdout, &ap)
	if len(keys) != 4 {
		t.Errorf("create --json keys = %v, want name, password, createdAt, privileged", keys)
	}
	if ap.Name != "mobile-poster-bot" || !pwFullRE.MatchString(ap.Password) || !ap.Privileged {
		t.Errorf("create --json = %+v", ap)
	}
	if _, err := time.Parse(time.RFC3339, ap.CreatedAt); err != nil {
		t.Errorf("createdAt %q: %v", ap.CreatedAt, err)
	}
	if ap.Password == pw {
		t.Error("two app passwords are the same")
	}
	p.mustLogin(t, ap.Password)

	// A duplicate name fails, naming the error, and prints no password.
	r = p.admin(t, "app-password", "create", "--name", "my-feed-builder")
	if r.code != 1 || !strings.Contains(r.stderr, "DuplicateName") {
		t.Errorf("duplicate: want exit 1 naming DuplicateName: %v", r)
	}
	if pwRE.MatchString(r.stdout + r.stderr) {
		t.Errorf("duplicate printed a password: %v", r)
	}
	if got := names(p.listJSON(t)); !slices.Equal(got, []string{"mobile-poster-bot", "my-feed-builder"}) {
		t.Errorf("after the duplicate, list = %v", got)
	}
	// The first password still works: the duplicate replaced nothing.
	p.mustLogin(t, pw)
}

func testAppPasswordList(t *testing.T, bin string) {
	p := startPDS(t, bin)

	r := p.mustAdmin(t, "app-password", "list")
	if r.stdout != "No app passwords.\n" {
		t.Errorf("empty list = %q", r.stdout)
	}
	if r := p.mustAdmin(t, "app-password", "list", "--json"); strings.TrimSpace(r.stdout) != "[]" {
		t.Errorf("empty list --json = %q", r.stdout)
	}

	var pws []string
	for _, args := range [][]string{{"--name", "alpha"}, {"--name", "beta bot", "--privileged"}} {
		r := p.mustAdmin(t, append([]string{"app-password", "create"}, args...)...)
		pws = append(pws, passwordIn(t, r.stdout))
		time.Sleep(5 * time.Millisecond) // distinct creation times
	}

	r = p.mustAdmin(t, "app-password", "list")
	lines := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("list printed %d lines, want a header and 2 rows:\n%s", len(lines), r.stdout)
	}
	if f := strings.Fields(lines[0]); !slices.Equal(f, []string{"NAME", "CREATED", "PRIVILEGED"}) {
		t.Errorf("header = %q", lines[0])
	}
	// Columns line up under the header; newest first.
	col := strings.Index(lines[0], "CREATED")
	for i, want := range []struct{ name, priv string }{{"beta bot", "yes"}, {"alpha", "no"}} {
		row := lines[i+1]
		if !strings.HasPrefix(row, want.name+" ") || !strings.HasSuffix(row, " "+want.priv) {
			t.Errorf("row %d = %q, want %s ... %s", i+1, row, want.name, want.priv)
		}
		if len(row) <= col || row[col-1] != ' ' || row[col] == ' ' {
			t.Errorf("row %q is not aligned with the header %q", row, lines[0])
		}
	}
	for _, pw := range pws {
		if strings.Contains(r.stdout, pw) {
			t.Errorf("list shows a password:\n%s", r.stdout)
		}
	}

	aps := p.listJSON(t)
	if got := names(aps); !slices.Equal(got, []string{"beta bot", "alpha"}) {
		t.Fatalf("list --json names = %v", got)
	}
	if !aps[0].Privileged || aps[1].Privileged {
		t.Errorf("list --json = %+v", aps)
	}
	// The text shows each creation time (in UTC, to the second).
	for i, ap := range aps {
		c, err := time.Parse(time.RFC3339, ap.CreatedAt)
		if err != nil {
			t.Fatalf("createdAt %q: %v", ap.CreatedAt, err)
		}
		if want := c.UTC().Format("2006-01-02 15:04:05"); !strings.Contains(lines[i+1], want) {
			t.Errorf("row %q lacks the creation time %s", lines[i+1], want)
		}
	}
}

func testAppPasswordRevoke(t *testing.T, bin string) {
	p := startPDS(t, bin)
	pw := passwordIn(t, p.mustAdmin(t, "app-password", "create", "--name", "bot").stdout)
	other := passwordIn(t, p.mustAdmin(t, "app-password", "create", "--name", "other").stdout)
	sess := p.mustLogin(t, pw)
	if code := p.getSession(t, sess.AccessJWT); code != http.StatusOK {
		t.Fatalf("getSession with the app-password session = %d", code)
	}

	// Without a terminal and without -y: usage error, nothing revoked.
	r := p.admin(t, "app-password", "revoke", "--name", "bot")
	if r.code != 2 || !strings.Contains(r.stderr, "pass -y") {
		t.Errorf("revoke without -y: want exit 2 saying \"pass -y\": %v", r)
	}
	// Without a terminal and without a name: usage error.
	if r := p.admin(t, "app-password", "revoke", "-y"); r.code != 2 || !strings.Contains(r.stderr, "--name") {
		t.Errorf("revoke without --name: %v", r)
	}
	if got := names(p.listJSON(t)); !slices.Equal(got, []string{"other", "bot"}) {
		t.Errorf("after refused revokes, list = %v", got)
	}
	if code := p.getSession(t, sess.AccessJWT); code != http.StatusOK {
		t.Errorf("getSession after a refused revoke = %d", code)
	}

	r = p.mustAdmin(t, "app-password", "revoke", "--name", "bot", "-y")
	if want := "Revoked \"bot\"; ended 1 active session(s).\n"; r.stdout != want {
		t.Errorf("revoke printed %q, want %q", r.stdout, want)
	}
	noSecret(t, r, "admin token", p.acct.AdminToken)
	if code := p.getSession(t, sess.AccessJWT); code != http.StatusUnauthorized {
		t.Errorf("getSession with the revoked session = %d, want 401", code)
	}
	if code, _ := p.login(t, pw); code != http.StatusUnauthorized {
		t.Errorf("createSession with the revoked password = %d, want 401", code)
	}
	// The account password and the other app password keep working.
	p.mustLogin(t, testPassword)
	p.mustLogin(t, other)
	if got := names(p.listJSON(t)); !slices.Equal(got, []string{"other"}) {
		t.Errorf("after revoke, list = %v", got)
	}

	// Unknown names fail.
	r = p.admin(t, "app-password", "revoke", "-n", "bot", "-y")
	if r.code != 1 || !strings.Contains(r.stderr, "bot") || !strings.Contains(r.stderr, "InvalidRequest") {
		t.Errorf("revoke of an unknown name: want exit 1: %v", r)
	}
}

// testAppPasswordCreatePTY drives the name prompt on a terminal.
func testAppPasswordCreatePTY(t *testing.T, bin string) {
	p := startPDS(t, bin)
	term := startPTY(t, bin, nil, "app-password", "create", "--server", p.base, "--admin-token", p.acct.AdminToken)
	at := term.waitText("Name of the new app password", 0)
	term.send(keyEnter) // empty: refused, the prompt stays
	at = term.waitText("a name is required", at)
	term.send("my-feed-builder")
	term.waitText("my-feed-builder", at)
	term.send(keyEnter)
	code, stdout := term.wait()
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nterminal:\n%s", code, stdout, term.text())
	}
	pw := passwordIn(t, stdout)
	if !strings.Contains(stdout, `"my-feed-builder"`) || !strings.Contains(stdout, "Save it now: it will not be shown again") {
		t.Errorf("stdout:\n%s", stdout)
	}
	if strings.Contains(term.text(), pw) {
		t.Errorf("the prompt's terminal output holds the password:\n%s", term.text())
	}
	if got := names(p.listJSON(t)); !slices.Equal(got, []string{"my-feed-builder"}) {
		t.Errorf("list = %v", got)
	}
	p.mustLogin(t, pw)

	// --json on a terminal: the prompt goes to the terminal, stdout is
	// only the JSON.
	term = startPTY(t, bin, nil, "app-password", "create", "--json", "--server", p.base, "--admin-token", p.acct.AdminToken)
	term.waitText("Name of the new app password", 0)
	term.send("second" + keyEnter)
	code, stdout = term.wait()
	var ap appPassword
	if code != 0 {
		t.Fatalf("--json: exit %d\n%s", code, term.text())
	}
	decodeOne(t, stdout, &ap)
	if ap.Name != "second" || !pwFullRE.MatchString(ap.Password) {
		t.Errorf("--json = %+v", ap)
	}
}

// testAppPasswordRevokePTY drives the selection and the confirmation on a
// terminal.
func testAppPasswordRevokePTY(t *testing.T, bin string) {
	p := startPDS(t, bin)
	flags := []string{"--server", p.base, "--admin-token", p.acct.AdminToken}
	revoke := func(extra ...string) *ptyProc {
		return startPTY(t, bin, nil, append(append([]string{"app-password", "revoke"}, extra...), flags...)...)
	}

	// Nothing to choose from.
	term := revoke()
	if code, stdout := term.wait(); code != 0 || stdout != "No app passwords to revoke.\n" {
		t.Errorf("revoke with none: exit %d, stdout %q", code, stdout)
	}

	p.mustAdmin(t, "app-password", "create", "--name", "older")
	time.Sleep(5 * time.Millisecond)
	p.mustAdmin(t, "app-password", "create", "--name", "newer")
	sess := p.mustLogin(t, passwordIn(t, p.mustAdmin(t, "app-password", "create", "--name", "newest").stdout))

	// Choose the first (newest), answer no.
	term = revoke()
	at := term.waitText("App password to revoke", 0)
	at = term.waitText("older", at)
	term.press(keyEnter, `Revoke the app password "newest"?`, at)
	term.send("n")
	if code, stdout := term.wait(); code != 0 || stdout != "Nothing revoked.\n" {
		t.Errorf("answering no: exit %d, stdout %q\nterminal:\n%s", code, stdout, term.text())
	}
	if got := names(p.listJSON(t)); !slices.Equal(got, []string{"newest", "newer", "older"}) {
		t.Errorf("after answering no, list = %v", got)
	}
	if code := p.getSession(t, sess.AccessJWT); code != http.StatusOK {
		t.Errorf("after answering no, getSession = %d", code)
	}

	// Choose the third, answer yes.
	term = revoke()
	at = term.waitText("App password to revoke", 0)
	at = term.waitText("older", at)
	at = term.press(keyDown, "> newer", at)
	at = term.press(keyDown, "> older", at)
	term.press(keyEnter, `Revoke the app password "older"?`, at)
	term.send("y")
	if code, stdout := term.wait(); code != 0 || stdout != "Revoked \"older\"; ended 0 active session(s).\n" {
		t.Errorf("answering yes: exit %d, stdout %q\nterminal:\n%s", code, stdout, term.text())
	}
	if got := names(p.listJSON(t)); !slices.Equal(got, []string{"newest", "newer"}) {
		t.Errorf("after revoking older, list = %v", got)
	}

	// A name given: only the confirmation is asked.
	term = revoke("--name", "newest")
	term.waitText(`Revoke the app password "newest"?`, 0)
	term.send("y")
	if code, stdout := term.wait(); code != 0 || stdout != "Revoked \"newest\"; ended 1 active session(s).\n" {
		t.Errorf("--name on a terminal: exit %d, stdout %q\nterminal:\n%s", code, stdout, term.text())
	}
	if code := p.getSession(t, sess.AccessJWT); code != http.StatusUnauthorized {
		t.Errorf("after revoking newest, getSession = %d, want 401", code)
	}
}

// testAppPasswordAccessible answers the prompts in huh's accessible mode
// (PDS_ACCESSIBLE=1): plain lines instead of a redrawn form.
func testAppPasswordAccessible(t *testing.T, bin string) {
	p := startPDS(t, bin)
	env := []string{"PDS_ACCESSIBLE=1"}
	flags := []string{"--server", p.base, "--admin-token", p.acct.AdminToken}

	term := startPTY(t, bin, env, append([]string{"app-password", "create"}, flags...)...)
	term.waitText("Name of the new app password", 0)
	term.send("screen-reader-client\r")
	code, stdout := term.wait()
	if code != 0 || !strings.Contains(stdout, `"screen-reader-client"`) {
		t.Fatalf("create: exit %d, stdout %q\nterminal:\n%s", code, stdout, term.text())
	}
	pw := passwordIn(t, stdout)

	term = startPTY(t, bin, env, append([]string{"app-password", "revoke"}, flags...)...)
	at := term.waitText("App password to revoke", 0)
	term.waitText("screen-reader-client", at)
	term.send("1\r")
	term.waitText(`Revoke the app password "screen-reader-client"?`, at)
	term.send("n\r")
	if code, stdout := term.wait(); code != 0 || stdout != "Nothing revoked.\n" {
		t.Errorf("revoke, answering no: exit %d, stdout %q\nterminal:\n%s", code, stdout, term.text())
	}
	p.mustLogin(t, pw)
}
