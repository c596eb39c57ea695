package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"

	"stratus/internal/auth"
	"stratus/internal/config"
)

// Account of a local server started by StartLocal.
const (
	LocalHostname = "bench.test"
	LocalHandle   = "bench.test"
)

// LocalOptions say how to start a local server.
type LocalOptions struct {
	// Binary is the pds executable to run (the tool's own, normally).
	Binary string
	// ServeArgs are extra `pds serve` flags, e.g. --sync-commits=false.
	ServeArgs []string
	// Debug starts the server's loopback pprof listener (for profiles).
	Debug bool
	// Env is the child's environment; PDS_* variables are removed so
	// that only the temporary data directory configures it.
	Env []string
	// Log receives the server's log lines (nil discards them).
	Log io.Writer
}

// Local is a server running as a child process on a temporary data
// directory. Measuring a child rather than a server inside the tool keeps
// the server's memory and CPU apart from the load generator's.
type Local struct {
	URL        string
	DebugURL   string // empty unless started with Debug
	Identifier string
	Password   string
	PID        int

	dir    string
	cmd    *exec.Cmd
	exited chan struct{}
	tail   *tailBuffer
}

var (
	listenRE = regexp.MustCompile(`listening on ([0-9a-zA-Z.:\[\]]+):(\d+)`)
	debugRE  = regexp.MustCompile(`debug listener on (http://[0-9a-zA-Z.:\[\]]+:\d+)`)
)

// StartLocal writes a fresh configuration (new keys, a random password)
// to a temporary data directory, starts `<binary> serve` on a free
// loopback port and waits until it listens.
func StartLocal(ctx context.Context, o LocalOptions) (*Local, error) {
	dir, err := os.MkdirTemp("", "pds-bench-")
	if err != nil {
		return nil, err
	}
	l := &Local{dir: dir, Identifier: LocalHandle, exited: make(chan struct{}), tail: &tailBuffer{}}
	if err := l.configure(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	args := append([]string{"serve", "--data-dir", filepath.Join(dir, "data")}, o.ServeArgs...)
	if o.Debug {
		args = append(args, "--debug-addr", "127.0.0.1:0")
	}
	l.cmd = exec.Command(o.Binary, args...)
	for _, kv := range o.Env {
		if !strings.HasPrefix(kv, "PDS_") {
			l.cmd.Env = append(l.cmd.Env, kv)
		}
	}
	if l.cmd.Env == nil {
		l.cmd.Env = []string{}
	}
	stdout, err := l.cmd.StdoutPipe()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	var logw io.Writer = l.tail
	if o.Log != nil {
		logw = io.MultiWriter(l.tail, o.Log)
	}
	l.cmd.Stderr = logw
	if err := l.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start %s: %w", o.Binary, err)
	}
	l.PID = l.cmd.Process.Pid
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default: // nobody waits any more
			}
		}
		io.Copy(io.Discard, stdout)
	}()
	go func() { l.cmd.Wait(); close(l.exited) }()

	timeout := time.NewTimer(time.Minute)
	defer timeout.Stop()
	for l.URL == "" || (o.Debug && l.DebugURL == "") {
		select {
		case line := <-lines:
			if m := listenRE.FindStringSubmatch(line); m != nil && l.URL == "" {
				l.URL = "http://" + m[1] + ":" + m[2]
			}
			if m := debugRE.FindStringSubmatch(line); m != nil {
				l.DebugURL = m[1]
			}
		case <-l.exited:
			os.RemoveAll(dir)
			return nil, fmt.Errorf("the local server exited before listening:\n%s", l.tail.String())
		case <-timeout.C:
			l.Stop()
			return nil, fmt.Errorf("the local server did not listen within a minute:\n%s", l.tail.String())
		case <-ctx.Done():
			l.Stop()
			return nil, ctx.Err()
		}
	}
	return l, nil
}

// configure writes settings.json and secrets.json as `pds init` would,
// on port 0 (a free port chosen at start).
func (l *Local) configure() error {
	key, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		return err
	}
	pub, err := key.PublicKey()
	if err != nil {
		return err
	}
	l.Password = auth.GeneratePassword()
	hash, err := auth.HashPassword(l.Password)
	if err != nil {
		return err
	}
	c := config.Default(filepath.Join(l.dir, "data"))
	c.Hostname = LocalHostname
	c.PublicURL = "https://" + LocalHostname
	c.DID = config.WebDID(c.PublicURL).String()
	c.Handle = LocalHandle
	c.Port = 0
	c.Bind = "127.0.0.1"
	c.SigningKey, c.SigningKeyPublic = config.EncodeKey(key), pub.DIDKey()
	c.JWTSecret, c.AdminToken = auth.GenerateToken(), auth.GenerateToken()
	c.PasswordHash = hash
	if err := c.Validate(); err != nil {
		return err
	}
	return c.Save()
}

// Stop ends the server (SIGTERM, then SIGKILL after 20 seconds) and
// removes its data directory.
func (l *Local) Stop() error {
	defer os.RemoveAll(l.dir)
	if l.cmd == nil || l.cmd.Process == nil {
		return nil
	}
	select {
	case <-l.exited:
	default:
		l.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-l.exited:
		case <-time.After(20 * time.Second):
			l.cmd.Process.Kill()
			<-l.exited
			return errors.New("the local server did not stop within 20s of SIGTERM and was killed")
		}
	}
	if st := l.cmd.ProcessState; st != nil && !st.Success() {
		return fmt.Errorf("the local server exited with %v:\n%s", st, l.tail.String())
	}
	return nil
}

// tailBuffer keeps the last lines a process wrote, for error messages.
type tailBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if n := len(t.b); n > 8<<10 {
		t.b = append([]byte(nil), t.b[n-8<<10:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}
