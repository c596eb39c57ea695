//go:build unix

package cli_test

import (
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// buildPDS builds the real pds binary with a version stamped in, as a
// release build would.
func buildPDS(t *testing.T, version string) string {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go command not found")
	}
	bin := filepath.Join(t.TempDir(), "pds")
	cmd := exec.CommandContext(t.Context(), gobin, "build", "-o", bin,
		"-ldflags", "-X stratus/internal/server.Version="+version, "stratus/cmd/pds")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// binEnv is the environment of the binary: the test's, without PDS_*.
func binEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PDS_") {
			env = append(env, kv)
		}
	}
	return env
}

// TestBinary is the user-level check: build pds, init a data directory,
// serve it, check health, stop it with SIGTERM.
func TestBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	t.Parallel()
	const version = "1.2.3-clitest"
	bin := buildPDS(t, version)
	dir := filepath.Join(t.TempDir(), "data")

	t.Run("version", func(t *testing.T) {
		out, err := exec.Command(bin, "version").Output()
		if err != nil {
			t.Fatal(err)
		}
		if string(out) != "stratus "+version+"\n" {
			t.Errorf("version = %q", out)
		}
	})

	t.Run("unknown flag exits 2", func(t *testing.T) {
		err := exec.Command(bin, "serve", "--no-such-flag").Run()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
			t.Errorf("exit = %v, want status 2", err)
		}
	})

	initCmd := exec.Command(bin, "init", "--data-dir", dir, "--handle", "alice.test", "--hostname", "pds.test",
		"--public-url", "https://pds.test", "--email", "a@b.c", "--yes", "--json")
	initCmd.Env = binEnv()
	initCmd.Stdin = nil // /dev/null: not a terminal
	var initErr strings.Builder
	initCmd.Stderr = &initErr
	out, err := initCmd.Output()
	if err != nil {
		t.Fatalf("pds init: %v\n%s", err, initErr.String())
	}
	var acct initOutput
	if err := json.Unmarshal(out, &acct); err != nil {
		t.Fatalf("pds init output is not JSON: %v\n%s", err, out)
	}
	if acct.DID != "did:web:pds.test" || acct.Password == "" || acct.AdminToken == "" {
		t.Fatalf("pds init printed %+v", acct)
	}
	for file, want := range map[string]os.FileMode{"settings.json": 0o644, "secrets.json": 0o600} {
		st, err := os.Stat(filepath.Join(dir, file))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != want {
			t.Errorf("%s mode %v, want %v", file, st.Mode().Perm(), want)
		}
	}

	serve := exec.Command(bin, "serve", "--data-dir", dir, "--port", "0")
	serve.Env = binEnv()
	var stdout, stderr syncBuffer
	serve.Stdout, serve.Stderr = &stdout, &stderr
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	// exited is closed when the process has exited, after waitErr is set.
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = serve.Wait(); close(exited) }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			serve.Process.Kill()
			<-exited
		}
	})
	done := make(chan int) // closed on exit, for waitFor
	go func() { <-exited; close(done) }()
	m := waitFor(t, &stdout, listeningRE, done)
	base := "http://" + m[1] + ":" + m[2]

	var health struct {
		Version string `json:"version"`
	}
	if code := call(t, "GET", base+"/xrpc/_health", "", nil, &health); code != http.StatusOK {
		t.Fatalf("_health = %d\n%s", code, stderr.String())
	}
	if health.Version != version {
		t.Errorf("_health version %q, want %q", health.Version, version)
	}

	if err := serve.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		if waitErr != nil {
			t.Errorf("pds serve after SIGTERM: %v\nstdout:\n%s\nstderr:\n%s", waitErr, stdout.String(), stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("pds serve did not exit within 15s of SIGTERM")
	}
	if !strings.Contains(stdout.String(), "shutting down") {
		t.Errorf("stdout lacks \"shutting down\":\n%s", stdout.String())
	}
}
