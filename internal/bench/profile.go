package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Profiler captures profiles of the server under test.
type Profiler interface {
	// StartCPU starts a CPU profile.
	StartCPU(ctx context.Context) error
	// StopCPU stops it and saves it under name, returning the file.
	StopCPU(ctx context.Context, name string) (string, error)
	// Heap saves a heap profile, returning the file.
	Heap(ctx context.Context) (string, error)
}

// Debug endpoints of `pds serve --debug-addr` that start and stop a CPU
// profile on request, so that each scenario gets its own profile.
const (
	CPUStartPath = "/debug/pprof/cpu/start"
	CPUStopPath  = "/debug/pprof/cpu/stop"
	HeapPath     = "/debug/pprof/heap"
)

// HTTPProfiler captures profiles from a server's debug listener (`pds
// serve --debug-addr`) and writes them to Dir as cpu-<scenario>.pprof and
// heap.pprof, for `go tool pprof`.
type HTTPProfiler struct {
	Base string // e.g. http://127.0.0.1:6060
	Dir  string
}

func (p *HTTPProfiler) call(ctx context.Context, method, path string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(p.Base, "/")+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, truncate(string(b), 200))
	}
	return b, nil
}

// StartCPU implements Profiler.
func (p *HTTPProfiler) StartCPU(ctx context.Context) error {
	_, err := p.call(ctx, http.MethodPost, CPUStartPath)
	return err
}

// StopCPU implements Profiler.
func (p *HTTPProfiler) StopCPU(ctx context.Context, name string) (string, error) {
	b, err := p.call(ctx, http.MethodPost, CPUStopPath)
	if err != nil {
		return "", err
	}
	return p.save("cpu-"+name+".pprof", b)
}

// Heap implements Profiler.
func (p *HTTPProfiler) Heap(ctx context.Context) (string, error) {
	b, err := p.call(ctx, http.MethodGet, HeapPath+"?gc=1")
	if err != nil {
		return "", err
	}
	return p.save("heap.pprof", b)
}

func (p *HTTPProfiler) save(name string, b []byte) (string, error) {
	if err := os.MkdirAll(p.Dir, 0o755); err != nil {
		return "", err
	}
	f := filepath.Join(p.Dir, name)
	return f, os.WriteFile(f, b, 0o644)
}
