package bench

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Memory is a process's resident memory as /proc/<pid>/status reports it.
type Memory struct {
	RSSKB  int64 // VmRSS: resident now
	PeakKB int64 // VmHWM: the highest resident size since the process started
}

// readMemory reads VmRSS and VmHWM of pid (Linux only).
func readMemory(pid int) (Memory, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return Memory{}, err
	}
	return parseStatus(b)
}

// parseStatus extracts VmRSS and VmHWM (in kB) from a /proc status file.
func parseStatus(b []byte) (Memory, error) {
	var m Memory
	var rss, hwm bool
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		var dst *int64
		switch name {
		case "VmRSS":
			dst, rss = &m.RSSKB, true
		case "VmHWM":
			dst, hwm = &m.PeakKB, true
		default:
			continue
		}
		f := strings.Fields(val)
		if len(f) != 2 || f[1] != "kB" {
			return Memory{}, fmt.Errorf("unexpected %s line %q", name, sc.Text())
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return Memory{}, fmt.Errorf("%s: %w", name, err)
		}
		*dst = n
	}
	if !rss || !hwm {
		return Memory{}, errors.New("status has no VmRSS or VmHWM (a kernel thread, or not Linux)")
	}
	return m, nil
}

// PIDByPort finds the process listening on a local TCP port: the
// listening socket's inode from /proc/net/tcp and tcp6, then the process
// holding a descriptor for that socket. It only sees processes whose
// /proc/<pid>/fd the caller may read (the same user, or root).
func PIDByPort(port int) (int, error) {
	inodes := map[string]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, ino := range listeningInodes(b, port) {
			inodes[ino] = true
		}
	}
	if len(inodes) == 0 {
		return 0, fmt.Errorf("no socket listens on local port %d", port)
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		fds, err := os.ReadDir(filepath.Join("/proc", p.Name(), "fd"))
		if err != nil {
			continue
		}
		for _, fd := range fds {
			l, err := os.Readlink(filepath.Join("/proc", p.Name(), "fd", fd.Name()))
			if err != nil {
				continue
			}
			if ino, ok := strings.CutPrefix(l, "socket:["); ok && inodes[strings.TrimSuffix(ino, "]")] {
				return pid, nil
			}
		}
	}
	return 0, fmt.Errorf("port %d is open, but no readable process holds it (another user's process?): pass --pid", port)
}

// listeningInodes returns the inodes of sockets in LISTEN state (0A) on
// port in a /proc/net/tcp{,6} table.
func listeningInodes(table []byte, port int) []string {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(table))
	sc.Scan() // header
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
		if len(f) < 10 || f[3] != "0A" {
			continue
		}
		_, hexPort, ok := strings.Cut(f[1], ":")
		if !ok {
			continue
		}
		p, err := strconv.ParseUint(hexPort, 16, 16)
		if err != nil || int(p) != port {
			continue
		}
		out = append(out, f[9])
	}
	return out
}

// sampler polls a process's memory in the background and remembers the
// largest resident size it saw.
type sampler struct {
	pid  int
	stop chan struct{}
	done chan struct{}

	mu      sync.Mutex
	max     int64
	samples int
	err     error
}

func startSampler(pid int, every time.Duration) *sampler {
	s := &sampler{pid: pid, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			s.sample()
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *sampler) sample() {
	m, err := readMemory(s.pid)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		if s.err == nil {
			s.err = err
		}
		return
	}
	s.samples++
	s.max = max(s.max, m.RSSKB)
}

// now reads the current memory (and counts it as a sample).
func (s *sampler) now() (Memory, error) {
	m, err := readMemory(s.pid)
	if err == nil {
		s.mu.Lock()
		s.samples++
		s.max = max(s.max, m.RSSKB)
		s.mu.Unlock()
	}
	return m, err
}

// finish stops sampling and returns the summary.
func (s *sampler) finish() *RSS {
	close(s.stop)
	<-s.done
	out := &RSS{PID: s.pid}
	if m, err := readMemory(s.pid); err == nil {
		out.LastKB, out.PeakKB = m.RSSKB, m.PeakKB
		s.mu.Lock()
		s.max = max(s.max, m.RSSKB)
		s.samples++
		s.mu.Unlock()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out.MaxSampledKB, out.Samples = s.max, s.samples
	if s.err != nil {
		out.Error = s.err.Error()
	}
	return out
}
