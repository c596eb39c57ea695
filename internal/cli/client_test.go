//go:build unix

package cli_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
)

// The tests of the admin commands (app-password, secret) run the real pds
// binary against a real `pds serve` subprocess, as an operator would.

// adminVersion is stamped into the binary the admin tests build.
const adminVersion = "0.0.0-admintest"

// pdsProc is an initialised data directory served by a `pds serve`
// subprocess.
type pdsProc struct {
	bin  string
	dir  string
	acct initOutput
	base string // http://127.0.0.1:port
	port string
}

// startPDS initialises a did:web data directory (extra are more init
// flags) and serves it on a port the system picks, unless extra names one
// with --port, which is then used by serve too.
func startPDS(t *testing.T, bin string, extra ...string) *pdsProc {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	args := append(initArgs(dir, "--json", "--password", testPassword), extra...)
	r := runBin(t, bin, nil, args...)
	if r.code != 0 {
		t.Fatalf("pds init: %v", r)
	}
	p := &pdsProc{bin: bin, dir: dir}
	decodeOne(t, r.stdout, &p.acct)

	serveArgs := []string{"serve", "--data-dir", dir}
	if !hasFlag(extra, "--port") {
		serveArgs = append(serveArgs, "--port", "0")
	}
	cmd := exec.Command(bin, serveArgs...)
	cmd.Env = binEnv()
	var stdout, stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("pds serve stdout:\n%s\npds serve stderr:\n%s", stdout.String(), stderr.String())
		}
	})
	done := make(chan int)
	go func() { <-exited; close(done) }()
	m := waitFor(t, &stdout, listeningRE, done)
	p.port = m[2]
	p.base = "http://127.0.0.1:" + m[2]
	return p
}

func hasFlag(args []string, flag string) bool {
	for _, a := range args {
		if a == flag || strings.HasPrefix(a, flag+"=") {
			return true
		}
	}
	return false
}

// runBin runs the binary with stdin from /dev/null (no terminal), the
// test's environment without PDS_* plus env, and returns what it did.
func runBin(t *testing.T, bin string, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), hangTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(binEnv(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("pds %s: %v", strings.Join(args, " "), err)
	}
	if ctx.Err() != nil {
		t.Fatalf("pds %s did not finish within %v", strings.Join(args, " "), hangTimeout)
	}
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// admin runs a command against the server with --server and the admin
// token given as flags.
func (p *pdsProc) admin(t *testing.T, args ...string) result {
	t.Helper()
	return runBin(t, p.bin, nil, append(args, "--server", p.base, "--admin-token", p.acct.AdminToken)...)
}

// mustAdmin is admin that fails the test unless the command exits 0.
func (p *pdsProc) mustAdmin(t *testing.T, args ...string) result {
	t.Helper()
	r := p.admin(t, args...)
	if r.code != 0 {
		t.Fatalf("pds %s: %v", strings.Join(args, " "), r)
	}
	return r
}

// session is the answer of createSession.
type session struct {
	AccessJWT  string `json:"accessJwt"`
	RefreshJWT string `json:"refreshJwt"`
	DID        string `json:"did"`
}

// login calls createSession and returns the status and the session.
func (p *pdsProc) login(t *testing.T, password string) (int, session) {
	t.Helper()
	var s session
	code := call(t, "POST", p.base+"/xrpc/com.atproto.server.createSession", "",
		map[string]string{"identifier": p.acct.Handle, "password": password}, &s)
	return code, s
}

// mustLogin logs in and fails the test unless that works.
func (p *pdsProc) mustLogin(t *testing.T, password string) session {
	t.Helper()
	code, s := p.login(t, password)
	if code != http.StatusOK || s.AccessJWT == "" {
		t.Fatalf("createSession with %q = %d", password, code)
	}
	return s
}

// getSession returns the status of getSession with an access token.
func (p *pdsProc) getSession(t *testing.T, token string) int {
	t.Helper()
	return call(t, "GET", p.base+"/xrpc/com.atproto.server.getSession", token, nil, nil)
}

// noSecret fails the test if r printed secret anywhere.
func noSecret(t *testing.T, r result, what, secret string) {
	t.Helper()
	if secret != "" && (strings.Contains(r.stdout, secret) || strings.Contains(r.stderr, secret)) {
		t.Errorf("output shows the %s:\n%v", what, r)
	}
}

// ptyProc is the binary running on a pseudo-terminal: stdin and stderr
// (where prompts are drawn) are the terminal, stdout is captured apart.
type ptyProc struct {
	t      *testing.T
	ptmx   *os.File
	screen syncBuffer // everything written to the terminal
	stdout syncBuffer
	copied chan struct{}
	exited chan struct{}
	code   int
}

// startPTY starts the binary on a new 120x40 terminal, its standard
// output captured apart (p.stdout).
func startPTY(t *testing.T, bin string, env []string, args ...string) *ptyProc {
	t.Helper()
	return launchPTY(t, bin, env, true, args...)
}

// launchPTY starts the binary on a new 120x40 terminal; with splitStdout
// its standard output goes to p.stdout instead of the terminal.
func launchPTY(t *testing.T, bin string, env []string, splitStdout bool, args ...string) *ptyProc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(binEnv(), append([]string{"TERM=xterm-256color"}, env...)...)
	p := &ptyProc{t: t, copied: make(chan struct{}), exited: make(chan struct{})}
	if splitStdout {
		cmd.Stdout = &p.stdout
	}
	ptmx, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 40, Cols: 120})
	if err != nil {
		t.Fatalf("start on a pseudo-terminal: %v", err)
	}
	p.ptmx = ptmx
	go func() { io.Copy(&p.screen, ptmx); close(p.copied) }()
	go func() {
		cmd.Wait()
		p.code = cmd.ProcessState.ExitCode()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			cmd.Process.Kill()
			<-p.exited
		}
		ptmx.Close()
	})
	return p
}

// ansiRE matches terminal control sequences: CSI, OSC, DCS/APC strings
// and two-character escapes.
var ansiRE = regexp.MustCompile(`\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)|\x1b[P_^X][^\x1b]*\x1b\\|\x1b[@-Z\\-_]|\x1b[ -/][0-~]|\x1b[=>]`)

// text is what was written to the terminal, without control sequences.
func (p *ptyProc) text() string { return ansiRE.ReplaceAllString(p.screen.String(), "") }

// waitText waits until the terminal shows s (after the offset from), and
// returns the offset just past it.
func (p *ptyProc) waitText(s string, from int) int {
	p.t.Helper()
	deadline := time.Now().Add(hangTimeout)
	for time.Now().Before(deadline) {
		txt := p.text()
		if from > len(txt) {
			from = len(txt)
		}
		if i := strings.Index(txt[from:], s); i >= 0 {
			return from + i + len(s)
		}
		select {
		case <-p.exited:
			<-p.copied
			if i := strings.Index(p.text()[from:], s); i >= 0 {
				return from + i + len(s)
			}
			p.t.Fatalf("exited %d without showing %q; terminal:\n%s\nstdout:\n%s", p.code, s, p.text(), p.stdout.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	p.t.Fatalf("timed out waiting for %q; terminal:\n%s", s, p.text())
	return 0
}

// tryText is waitText without failing: it reports whether s appeared
// within d.
func (p *ptyProc) tryText(s string, from int, d time.Duration) (int, bool) {
	deadline := time.Now().Add(d)
	for {
		txt := p.text()
		if from > len(txt) {
			from = len(txt)
		}
		if i := strings.Index(txt[from:], s); i >= 0 {
			return from + i + len(s), true
		}
		if time.Now().After(deadline) {
			return from, false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// press types key until the terminal shows want, retrying a few times: a
// key typed while the program is still switching the terminal to raw mode
// can be discarded by the terminal driver.
func (p *ptyProc) press(key, want string, from int) int {
	p.t.Helper()
	if key == keyEnter {
		// Enter submits: typed twice it would also answer the next
		// question, so it is typed once and the screen waited for.
		p.send(key)
		return p.waitText(want, from)
	}
	for attempt := 0; attempt < 5; attempt++ {
		p.send(key)
		if at, ok := p.tryText(want, from, 2*time.Second); ok {
			return at
		}
	}
	return p.waitText(want, from)
}

// send types keys on the terminal. It first lets the program settle: keys
// that arrive while a prompt is still starting up can be dropped (or an
// escape sequence split), which made these tests flaky on a loaded machine.
func (p *ptyProc) send(keys string) {
	p.t.Helper()
	time.Sleep(100 * time.Millisecond)
	if _, err := p.ptmx.Write([]byte(keys)); err != nil {
		p.t.Fatalf("type %q: %v", keys, err)
	}
}

// wait waits for the process to exit and returns its exit status and
// stdout.
func (p *ptyProc) wait() (int, string) {
	p.t.Helper()
	select {
	case <-p.exited:
	case <-time.After(hangTimeout):
		p.t.Fatalf("did not exit; terminal:\n%s", p.text())
	}
	select {
	case <-p.copied:
	case <-time.After(5 * time.Second):
	}
	return p.code, p.stdout.String()
}

// Terminal keys.
const (
	keyEnter = "\r"
	keyDown  = "\x1b[B"
	keyCtrlU = "\x15"
)

// TestAdminCommands builds the binary once and runs every admin-command
// test against it, each with its own data directory and server.
func TestAdminCommands(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs servers")
	}
	t.Parallel()
	bin := buildPDS(t, adminVersion)
	for _, tc := range []struct {
		name string
		f    func(*testing.T, string)
	}{
		{"client/unreachable", testClientUnreachable},
		{"client/wrong token", testClientWrongToken},
		{"client/local config", testClientLocalConfig},
		{"client/usage", testClientUsage},
		{"app-password/create", testAppPasswordCreate},
		{"app-password/list", testAppPasswordList},
		{"app-password/revoke", testAppPasswordRevoke},
		{"app-password/create on a terminal", testAppPasswordCreatePTY},
		{"app-password/revoke on a terminal", testAppPasswordRevokePTY},
		{"app-password/accessible prompts", testAppPasswordAccessible},
		{"secret/jwt", testSecretJWT},
		{"secret/password", testSecretPassword},
		{"secret/password on a terminal", testSecretPasswordPTY},
		{"secret/token", testSecretToken},
		{"secret/key", testSecretKey},
		{"secret/confirmation", testSecretConfirmation},
		{"dashboard/on a terminal", testDashboardPTY},
		{"dashboard/not a terminal", testDashboardNotTerminal},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.f(t, bin)
		})
	}
}

func testClientUnreachable(t *testing.T, bin string) {
	for _, args := range [][]string{
		{"app-password", "list"},
		{"app-password", "create", "--name", "x"},
		{"app-password", "revoke", "--name", "x", "-y"},
		{"secret", "jwt", "-y"},
		{"secret", "password", "--generate"},
		{"secret", "token", "-y"},
		{"secret", "key", "-y"},
	} {
		r := runBin(t, bin, nil, append(args, "--server", "http://127.0.0.1:1", "--admin-token", "some-secret-token-value")...)
		if r.code != 1 {
			t.Errorf("%v: exit %d, want 1: %v", args, r.code, r)
		}
		want := `cannot reach the PDS at http://127.0.0.1:1: `
		if !strings.Contains(r.stderr, want) || !strings.Contains(r.stderr, `(is "pds serve" running?)`) {
			t.Errorf("%v: stderr lacks %q ... (is \"pds serve\" running?):\n%s", args, want, r.stderr)
		}
		noSecret(t, r, "admin token", "some-secret-token-value")
	}
	// The same through PDS_SERVER and PDS_ADMIN_TOKEN.
	r := runBin(t, bin, []string{"PDS_SERVER=http://127.0.0.1:1", "PDS_ADMIN_TOKEN=some-secret-token-value"}, "app-password", "list")
	if r.code != 1 || !strings.Contains(r.stderr, "cannot reach the PDS at http://127.0.0.1:1") {
		t.Errorf("with PDS_SERVER: %v", r)
	}
}

func testClientWrongToken(t *testing.T, bin string) {
	p := startPDS(t, bin)
	const wrong = "wrong-admin-token-0123456789abcdef"
	for _, args := range [][]string{
		{"app-password", "list"},
		{"app-password", "create", "--name", "x"},
		{"secret", "jwt", "-y"},
		{"secret", "token", "-y"},
	} {
		r := runBin(t, bin, nil, append(args, "--server", p.base, "--admin-token", wrong)...)
		if r.code != 1 || !strings.Contains(r.stderr, "the server refused the admin token") {
			t.Errorf("%v with a wrong token: %v", args, r)
		}
		noSecret(t, r, "wrong token", wrong)
		noSecret(t, r, "real token", p.acct.AdminToken)
	}
	// Nothing was created or rotated.
	if r := p.mustAdmin(t, "app-password", "list", "--json"); strings.TrimSpace(r.stdout) != "[]" {
		t.Errorf("list after refused create: %s", r.stdout)
	}
	p.mustAdmin(t, "app-password", "list") // the real token still works
}

// testClientLocalConfig relies on the data directory for both the
// server's address (settings.json's port) and the admin token.
func testClientLocalConfig(t *testing.T, bin string) {
	port := strconv.Itoa(freePort(t))
	p := startPDS(t, bin, "--port", port)
	if p.port != port {
		t.Fatalf("serve listens on %s, want %s from settings.json", p.port, port)
	}
	r := runBin(t, bin, nil, "app-password", "create", "--data-dir", p.dir, "--name", "local")
	if r.code != 0 || !pwRE.MatchString(r.stdout) {
		t.Fatalf("create with the local config: %v", r)
	}
	noSecret(t, r, "admin token", p.acct.AdminToken)
	r = runBin(t, bin, []string{"PDS_DATA_DIR=" + p.dir}, "app-password", "list")
	if r.code != 0 || !strings.Contains(r.stdout, "local") {
		t.Errorf("list with PDS_DATA_DIR: %v", r)
	}
	// Flags and environment variables win over the files.
	r = runBin(t, bin, []string{"PDS_ADMIN_TOKEN=wrong-admin-token-0123456789"}, "app-password", "list", "--data-dir", p.dir)
	if r.code != 1 || !strings.Contains(r.stderr, "refused the admin token") {
		t.Errorf("PDS_ADMIN_TOKEN does not override secrets.json: %v", r)
	}
	r = runBin(t, bin, nil, "app-password", "list", "--data-dir", p.dir, "--server", "http://127.0.0.1:1")
	if r.code != 1 || !strings.Contains(r.stderr, "cannot reach the PDS at http://127.0.0.1:1") {
		t.Errorf("--server does not override settings.json: %v", r)
	}

	// A data directory that names no port and no token.
	empty := t.TempDir()
	r = runBin(t, bin, nil, "app-password", "list", "--data-dir", empty, "--server", p.base)
	if r.code != 1 || !strings.Contains(r.stderr, "no admin token") || !strings.Contains(r.stderr, "--admin-token") {
		t.Errorf("without any token: %v", r)
	}
}

func testClientUsage(t *testing.T, bin string) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"app-password", "bogus"}, "bogus"},
		{[]string{"app-password", "list", "extra"}, "extra"},
		{[]string{"app-password", "create", "--bogus"}, "--bogus"},
		{[]string{"app-password", "create"}, "--name"},
		{[]string{"app-password", "create", "--name", "  "}, "--name"},
		{[]string{"app-password", "revoke"}, "--name"},
		{[]string{"app-password", "list", "--server", "ftp://x"}, "--server"},
		{[]string{"app-password", "list", "--server", "http://h/path"}, "--server"},
		{[]string{"secret", "bogus"}, "bogus"},
		{[]string{"secret", "jwt"}, "pass -y"},
		{[]string{"secret", "token"}, "pass -y"},
		{[]string{"secret", "key"}, "pass -y"},
		{[]string{"secret", "password"}, "--generate"},
		{[]string{"secret", "password", "--password", "short"}, "at least 8"},
		{[]string{"secret", "password", "--password", "long enough", "--generate"}, "--generate"},
	} {
		// Usage errors are found before any request: the server named
		// does not exist.
		args := append(tt.args, "--admin-token", "t")
		if !hasFlag(tt.args, "--server") {
			args = append(args, "--server", "http://127.0.0.1:1")
		}
		r := runBin(t, bin, nil, args...)
		if r.code != 2 || !strings.Contains(r.stderr, tt.want) {
			t.Errorf("%v: want exit 2 naming %q: %v", tt.args, tt.want, r)
		}
	}
	// Usage errors come before looking for the server and its token.
	empty := t.TempDir()
	for _, args := range [][]string{{"app-password", "create"}, {"app-password", "revoke"}, {"secret", "jwt"}, {"secret", "password"}} {
		if r := runBin(t, bin, nil, append(args, "--data-dir", empty)...); r.code != 2 || strings.Contains(r.stderr, "admin token") {
			t.Errorf("%v in an empty data directory: want exit 2 for the usage: %v", args, r)
		}
	}
	for _, args := range [][]string{{"app-password", "--help"}, {"app-password", "create", "--help"},
		{"app-password", "list", "--help"}, {"app-password", "revoke", "--help"}, {"secret", "--help"},
		{"secret", "jwt", "--help"}, {"secret", "password", "--help"}, {"secret", "token", "--help"}, {"secret", "key", "--help"}} {
		r := runBin(t, bin, nil, args...)
		if r.code != 0 || !strings.Contains(r.stdout, "Examples:") || !strings.Contains(r.stdout, "--server") {
			t.Errorf("%v: %v", args, r)
		}
	}
	// The group alone prints its help.
	if r := runBin(t, bin, nil, "app-password"); r.code != 0 || !strings.Contains(r.stdout, "revoke") {
		t.Errorf("app-password alone: %v", r)
	}
}

// once fails unless text holds s exactly once.
func once(t *testing.T, text, s, what string) {
	t.Helper()
	if n := strings.Count(text, s); n != 1 {
		t.Errorf("%s shown %d times, want once:\n%s", what, n, text)
	}
}
