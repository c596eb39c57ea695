package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
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
// heap.pprof, for `go tool pprof`. Beside each server profile it writes the
// load generator's own CPU profile, load-<scenario>.pprof: on one machine
// the tool competes with the server for the same cores, and its share
// belongs in the picture.
type HTTPProfiler struct {
	Base string // e.g. http://127.0.0.1:6060
	Dir  string

	self bytes.Buffer // the load generator's CPU profile in progress
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
	if _, err := p.call(ctx, http.MethodPost, CPUStartPath); err != nil {
		return err
	}
	p.self.Reset()
	if err := pprof.StartCPUProfile(&p.self); err != nil {
		// Another profile of this process is running (a test harness,
		// say): the server's profile still comes.
		p.self.Reset()
	}
	return nil
}

// StopCPU implements Profiler.
func (p *HTTPProfiler) StopCPU(ctx context.Context, name string) (string, error) {
	pprof.StopCPUProfile()
	b, err := p.call(ctx, http.MethodPost, CPUStopPath)
	if err != nil {
		return "", err
	}
	if p.self.Len() > 0 {
		if _, err := p.save("load-"+name+".pprof", p.self.Bytes()); err != nil {
			return "", err
		}
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
