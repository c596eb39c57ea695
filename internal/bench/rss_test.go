package bench

import (
	"net"
	"os"
	"runtime"
	"slices"
	"testing"
)

func TestParseStatus(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Memory
		wantErr bool
	}{
		{"typical", "Name:\tpds\nVmPeak:\t  900 kB\nVmHWM:\t   81234 kB\nVmRSS:\t   65000 kB\nThreads:\t9\n", Memory{RSSKB: 65000, PeakKB: 81234}, false},
		{"no rss", "Name:\tkthreadd\nThreads:\t1\n", Memory{}, true},
		{"bad unit", "VmHWM:\t1 MB\nVmRSS:\t1 kB\n", Memory{}, true},
		{"bad number", "VmHWM:\tx kB\nVmRSS:\t1 kB\n", Memory{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStatus([]byte(tt.in))
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("parseStatus = %+v, %v; want %+v, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestListeningInodes(t *testing.T) {
	table := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:0A17 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1111 1 0000000000000000 100 0 0 10 0
   1: 0100007F:0A17 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 2222 1 0000000000000000 20 4 30 10 -1
   2: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3333 1 0000000000000000 100 0 0 10 0
`
	for _, tt := range []struct {
		port int
		want []string
	}{{2583, []string{"1111"}}, {8080, []string{"3333"}}, {50000, nil}} {
		if got := listeningInodes([]byte(table), tt.port); !slices.Equal(got, tt.want) {
			t.Errorf("port %d: %v, want %v", tt.port, got, tt.want)
		}
	}
}

// TestPIDByPortFindsItself listens on a port and finds this process by it.
func TestPIDByPortFindsItself(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	pid, err := PIDByPort(ln.Addr().(*net.TCPAddr).Port)
	if err != nil {
		t.Fatal(err)
	}
	if pid != os.Getpid() {
		t.Errorf("PIDByPort = %d, want this process %d", pid, os.Getpid())
	}
	m, err := readMemory(pid)
	if err != nil || m.RSSKB <= 0 || m.PeakKB < m.RSSKB {
		t.Errorf("readMemory = %+v, %v", m, err)
	}
	ln.Close()
	if _, err := PIDByPort(ln.Addr().(*net.TCPAddr).Port); err == nil {
		t.Error("PIDByPort found a closed port")
	}
}
