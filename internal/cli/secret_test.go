//go:build unix

package cli_test

import (
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"stratus/internal/config"
	"stratus/internal/identity/plctest"
)

// secrets reads the data directory's secrets.json.
func (p *pdsProc) secrets(t *testing.T) map[string]any {
	t.Helper()
	return readJSONFile(t, filepath.Join(p.dir, config.SecretsFile))
}

func testSecretJWT(t *testing.T, bin string) {
	p := startPDS(t, bin)
	before := str(t, p.secrets(t), "jwt-secret")
	owner := p.mustLogin(t, testPassword)
	app := p.mustLogin(t, passwordIn(t, p.mustAdmin(t, "app-password", "create", "--name", "bot").stdout))

	r := p.mustAdmin(t, "secret", "jwt", "-y")
	if want := "New JWT secret in effect: 2 session(s) ended. No restart needed.\n"; r.stdout != want {
		t.Errorf("stdout = %q, want %q", r.stdout, want)
	}
	noSecret(t, r, "admin token", p.acct.AdminToken)
	for what, s := range map[string]session{"owner": owner, "app-password": app} {
		if code := p.getSession(t, s.AccessJWT); code != http.StatusUnauthorized {
			t.Errorf("getSession with the old %s access token = %d, want 401", what, code)
		}
		if code := call(t, "POST", p.base+"/xrpc/com.atproto.server.refreshSession", s.RefreshJWT, nil, nil); code == http.StatusOK {
			t.Errorf("refreshSession with the old %s refresh token still works", what)
		}
	}
	// New sessions work, signed with the new secret, which was saved.
	s := p.mustLogin(t, testPassword)
	if code := p.getSession(t, s.AccessJWT); code != http.StatusOK {
		t.Errorf("getSession with a new session = %d", code)
	}
	if after := str(t, p.secrets(t), "jwt-secret"); after == before || len(after) < 32 {
		t.Errorf("secrets.json jwt-secret not replaced")
	}

	// No sessions left to end.
	r = p.mustAdmin(t, "secret", "jwt", "--yes")
	if !strings.HasPrefix(r.stdout, "New JWT secret in effect: 1 session(s) ended.") {
		t.Errorf("second rotation: %q", r.stdout)
	}
}

func testSecretPassword(t *testing.T, bin string) {
	p := startPDS(t, bin)
	hash := str(t, p.secrets(t), "password-hash")
	const newPassword = "a brand new password"

	r := p.mustAdmin(t, "secret", "password", "--password", newPassword)
	if !strings.HasPrefix(r.stdout, "Account password changed.\n") {
		t.Errorf("stdout = %q", r.stdout)
	}
	noSecret(t, r, "new password", newPassword)
	noSecret(t, r, "admin token", p.acct.AdminToken)
	p.mustLogin(t, newPassword)
	if code, _ := p.login(t, testPassword); code != http.StatusUnauthorized {
		t.Errorf("createSession with the old password = %d, want 401", code)
	}
	newHash := str(t, p.secrets(t), "password-hash")
	if newHash == hash {
		t.Error("secrets.json password-hash not replaced")
	}
	checkHash(t, newHash, newPassword)

	r = p.mustAdmin(t, "secret", "password", "--generate")
	gen := passwordIn(t, r.stdout)
	if !pwFullRE.MatchString(gen) || !strings.Contains(r.stdout, "Save it now: it will not be shown again") {
		t.Errorf("--generate printed:\n%s", r.stdout)
	}
	once(t, r.stdout, gen, "the generated password")
	p.mustLogin(t, gen)
	if code, _ := p.login(t, newPassword); code != http.StatusUnauthorized {
		t.Errorf("createSession with the replaced password = %d, want 401", code)
	}
	checkHash(t, str(t, p.secrets(t), "password-hash"), gen)
}

// testSecretPasswordPTY types the new password twice on a terminal.
func testSecretPasswordPTY(t *testing.T, bin string) {
	p := startPDS(t, bin)
	const newPassword = "typed-password-42"
	term := startPTY(t, bin, nil, "secret", "password", "--server", p.base, "--admin-token", p.acct.AdminToken)
	term.waitText("Repeat the new password", 0)
	at := term.waitText("enter next", 0)
	term.send("short" + keyEnter) // refused: too short
	at = term.waitText("at least 8 characters", at)
	term.send(keyCtrlU + newPassword + keyEnter)
	at = term.waitText("shift+tab back", at) // the second field has the focus
	term.send("something-else-1" + keyEnter) // refused: no match
	term.waitText("the passwords do not match", at)
	term.send(keyCtrlU + newPassword + keyEnter)
	code, stdout := term.wait()
	if code != 0 || !strings.HasPrefix(stdout, "Account password changed.\n") {
		t.Fatalf("exit %d, stdout %q\nterminal:\n%s", code, stdout, term.text())
	}
	for _, typed := range []string{newPassword, "something-else-1", "short"} {
		if strings.Contains(term.text(), typed) {
			t.Errorf("the terminal echoed %q:\n%s", typed, term.text())
		}
	}
	p.mustLogin(t, newPassword)
	if code, _ := p.login(t, testPassword); code != http.StatusUnauthorized {
		t.Errorf("createSession with the old password = %d, want 401", code)
	}
}

var tokenRE = regexp.MustCompile(`\b[a-z2-7]{52}\b`)

func testSecretToken(t *testing.T, bin string) {
	p := startPDS(t, bin)
	old := p.acct.AdminToken

	r := p.mustAdmin(t, "secret", "token", "-y")
	all := tokenRE.FindAllString(r.stdout, -1)
	if len(all) != 1 {
		t.Fatalf("want the new token printed once:\n%s", r.stdout)
	}
	tok := all[0]
	noSecret(t, r, "old admin token", old)
	for _, want := range []string{"secrets.json", "old", "scripts"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, r.stdout)
		}
	}
	if got := str(t, p.secrets(t), "admin-token"); got != tok {
		t.Errorf("secrets.json admin-token = %q, want the printed token", got)
	}

	// The old token is refused at once, the new one works.
	r = p.admin(t, "app-password", "list")
	if r.code != 1 || !strings.Contains(r.stderr, "the server refused the admin token") {
		t.Errorf("old token: %v", r)
	}
	if code := call(t, "GET", p.base+"/xrpc/com.atproto.server.listAppPasswords", old, nil, nil); code != http.StatusUnauthorized {
		t.Errorf("listAppPasswords with the old token = %d, want 401", code)
	}
	if r := runBin(t, bin, nil, "app-password", "list", "--server", p.base, "--admin-token", tok); r.code != 0 {
		t.Errorf("new token: %v", r)
	}
	// The local default (secrets.json) holds the new token.
	if r := runBin(t, bin, nil, "app-password", "list", "--server", p.base, "--data-dir", p.dir); r.code != 0 {
		t.Errorf("token from secrets.json: %v", r)
	}
}

// didDocKey returns the publicKeyMultibase of the served did.json.
func (p *pdsProc) didDocKey(t *testing.T) string {
	t.Helper()
	var doc struct {
		VerificationMethod []struct {
			ID                 string `json:"id"`
			PublicKeyMultibase string `json:"publicKeyMultibase"`
		} `json:"verificationMethod"`
	}
	if code := call(t, "GET", p.base+"/.well-known/did.json", "", nil, &doc); code != http.StatusOK || len(doc.VerificationMethod) != 1 {
		t.Fatalf("did.json = %d %+v", code, doc)
	}
	return doc.VerificationMethod[0].PublicKeyMultibase
}

// latestRev returns the rev of getLatestCommit.
func (p *pdsProc) latestRev(t *testing.T) string {
	t.Helper()
	var out struct {
		CID string `json:"cid"`
		Rev string `json:"rev"`
	}
	if code := call(t, "GET", p.base+"/xrpc/com.atproto.sync.getLatestCommit?did="+p.acct.DID, "", nil, &out); code != http.StatusOK || out.Rev == "" {
		t.Fatalf("getLatestCommit = %d %+v", code, out)
	}
	return out.Rev
}

var didKeyRE = regexp.MustCompile(`did:key:z[1-9A-HJ-NP-Za-km-z]+`)

func testSecretKey(t *testing.T, bin string) {
	t.Run("web", func(t *testing.T) {
		t.Parallel()
		p := startPDS(t, bin)
		oldKey := p.didDocKey(t)
		if "did:key:"+oldKey != p.acct.SigningKeyPublic {
			t.Fatalf("did.json key %s is not the initial key %s", oldKey, p.acct.SigningKeyPublic)
		}
		oldRev := p.latestRev(t)

		r := p.mustAdmin(t, "secret", "key", "-y")
		keys := didKeyRE.FindAllString(r.stdout, -1)
		if len(keys) != 1 || keys[0] == p.acct.SigningKeyPublic {
			t.Fatalf("want the new did:key printed once:\n%s", r.stdout)
		}
		newKey := keys[0]
		if !strings.Contains(r.stdout, "DID document") || !strings.Contains(r.stdout, "already lists the new key") {
			t.Errorf("did:web: stdout does not say the DID document is up to date:\n%s", r.stdout)
		}
		secrets := p.secrets(t)
		if publicOf(t, str(t, secrets, "signing-key")) != newKey {
			t.Error("secrets.json signing-key is not the printed key")
		}
		noSecret(t, r, "private signing key", str(t, secrets, "signing-key"))
		noSecret(t, r, "admin token", p.acct.AdminToken)
		settings := readJSONFile(t, filepath.Join(p.dir, config.SettingsFile))
		if str(t, settings, "signing-key-public") != newKey {
			t.Error("settings.json signing-key-public is not the printed key")
		}
		if got := p.didDocKey(t); "did:key:"+got != newKey {
			t.Errorf("did.json key = %s, want %s", got, newKey)
		}
		if newRev := p.latestRev(t); newRev <= oldRev {
			t.Errorf("getLatestCommit rev %s, want more than %s", newRev, oldRev)
		}
	})
	t.Run("plc", func(t *testing.T) {
		t.Parallel()
		plc := plctest.NewServer(t)
		p := startPDS(t, bin, "--did-method", "plc", "--plc-url", plc.URL())
		oldRev := p.latestRev(t)
		r := p.mustAdmin(t, "secret", "key", "-y")
		keys := didKeyRE.FindAllString(r.stdout, -1)
		if len(keys) == 0 || keys[0] == p.acct.SigningKeyPublic {
			t.Fatalf("want the new did:key printed:\n%s", r.stdout)
		}
		newKey := keys[0]
		// The follow-up lines the server sends, verbatim.
		for _, line := range []string{
			"\n  verificationMethods.atproto = " + newKey + "\n",
			plc.URL() + "/" + p.acct.DID,
			"Sign a PLC operation with your rotation key",
		} {
			if !strings.Contains(r.stdout, line) {
				t.Errorf("stdout lacks %q:\n%s", line, r.stdout)
			}
		}
		if strings.Contains(r.stdout, "already lists the new key") {
			t.Errorf("did:plc: claims the DID document is up to date:\n%s", r.stdout)
		}
		if newRev := p.latestRev(t); newRev <= oldRev {
			t.Errorf("getLatestCommit rev %s, want more than %s", newRev, oldRev)
		}
	})
}

// testSecretConfirmation: without -y the rotations refuse without a
// terminal and ask on one; answering no changes nothing.
func testSecretConfirmation(t *testing.T, bin string) {
	p := startPDS(t, bin)
	sess := p.mustLogin(t, testPassword)
	secretsBefore := p.secrets(t)

	for _, sub := range []string{"jwt", "token", "key"} {
		r := p.admin(t, "secret", sub)
		if r.code != 2 || !strings.Contains(r.stderr, "pass -y") {
			t.Errorf("secret %s without -y or terminal: %v", sub, r)
		}
	}
	for _, tt := range []struct{ sub, title string }{
		{"jwt", "Rotate the JWT secret?"},
		{"token", "Rotate the admin token?"},
		{"key", "Rotate the signing key?"},
	} {
		term := startPTY(t, bin, nil, "secret", tt.sub, "--server", p.base, "--admin-token", p.acct.AdminToken)
		term.waitText(tt.title, 0)
		term.send("n")
		if code, stdout := term.wait(); code != 0 || stdout != "Nothing changed.\n" {
			t.Errorf("secret %s, answering no: exit %d, stdout %q\nterminal:\n%s", tt.sub, code, stdout, term.text())
		}
	}
	if code := p.getSession(t, sess.AccessJWT); code != http.StatusOK {
		t.Errorf("getSession after refusals = %d", code)
	}
	after := p.secrets(t)
	for k, v := range secretsBefore {
		if after[k] != v {
			t.Errorf("secrets.json %s changed", k)
		}
	}

	// Answering yes on the terminal rotates.
	term := startPTY(t, bin, nil, "secret", "jwt", "--server", p.base, "--admin-token", p.acct.AdminToken)
	term.waitText("every session will end", 0)
	term.send("y")
	if code, stdout := term.wait(); code != 0 || !strings.HasPrefix(stdout, "New JWT secret in effect: 1 session(s) ended.") {
		t.Errorf("secret jwt, answering yes: exit %d, stdout %q\nterminal:\n%s", code, stdout, term.text())
	}
	if code := p.getSession(t, sess.AccessJWT); code != http.StatusUnauthorized {
		t.Errorf("getSession after rotation = %d, want 401", code)
	}
}
