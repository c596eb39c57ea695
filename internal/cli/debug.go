package cli

import (
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	runtimepprof "runtime/pprof"
	"sync"
	"time"

	"stratus/internal/bench"
)

// startDebug serves Go's pprof endpoints on a loopback address, for
// `pds bench --profile` and `go tool pprof`. It never listens on a public
// interface: profiles reveal memory contents.
func startDebug(addr string, log *slog.Logger) (*http.Server, net.Addr, error) {
	if err := checkDebugAddr(addr); err != nil {
		return nil, nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	cpu := &cpuProfile{}
	mux.HandleFunc("POST "+bench.CPUStartPath, cpu.start)
	mux.HandleFunc("POST "+bench.CPUStopPath, cpu.stop)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && err != http.ErrServerClosed {
			log.Error("debug listener stopped", "err", err)
		}
	}()
	return srv, ln.Addr(), nil
}

// checkDebugAddr accepts only loopback host:port addresses.
func checkDebugAddr(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return usageError{fmt.Sprintf("--debug-addr %q: %v", addr, err)}
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return usageError{fmt.Sprintf("--debug-addr %q: must be a loopback address such as 127.0.0.1:6060", addr)}
	}
	return nil
}

// cpuProfile is a CPU profile started and stopped by two requests, so a
// load generator can profile exactly one phase of its run (the standard
// /debug/pprof/profile runs for a fixed number of seconds).
type cpuProfile struct {
	mu      sync.Mutex
	buf     *bytes.Buffer
	started bool
}

func (c *cpuProfile) start(w http.ResponseWriter, _ *http.Request) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started {
		http.Error(w, "a CPU profile is already running", http.StatusConflict)
		return
	}
	c.buf = &bytes.Buffer{}
	if err := runtimepprof.StartCPUProfile(c.buf); err != nil {
		http.Error(w, err.Error(), http.StatusConflict)
		return
	}
	c.started = true
}

func (c *cpuProfile) stop(w http.ResponseWriter, _ *http.Request) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.started {
		http.Error(w, "no CPU profile is running", http.StatusConflict)
		return
	}
	runtimepprof.StopCPUProfile()
	c.started = false
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Write(c.buf.Bytes())
	c.buf = nil
}
