package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// The firehose subscribers of scenario 5 can run in a process of their own
// (Options.SubscriberProcess), which speaks a line protocol on its
// standard input and output:
//
//	child:  ready | error <message>
//	parent: wait <milliseconds> <cid> <cid> ...   child: ok | timeout
//	parent: dump                                  child: one JSON line of results
//
// and ends when its input closes. Arrival times cross as Unix nanoseconds
// of the wall clock, which both processes share.

// processSubscribers are subscribers running in a child process.
type processSubscribers struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Reader
	done chan error
}

// startSubscriberProcess starts cmd as the subscribers' process and waits
// until it has attached n subscribers.
func startSubscriberProcess(ctx context.Context, cmd *exec.Cmd, server, bypass string, n int, timeout time.Duration) (*processSubscribers, error) {
	cmd.Args = append(cmd.Args, "--server", server, "--subscribers", strconv.Itoa(n), "--timeout", timeout.String())
	if bypass != "" {
		cmd.Args = append(cmd.Args, "--ratelimit-bypass", bypass)
	}
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the subscribers' process: %w", err)
	}
	ps := &processSubscribers{cmd: cmd, in: in, out: bufio.NewReaderSize(out, 1<<20), done: make(chan error, 1)}
	go func() { ps.done <- cmd.Wait() }()
	line, err := ps.readLine(ctx, time.Minute+timeout)
	if err == nil && line != "ready" {
		err = errors.New(strings.TrimPrefix(line, "error "))
	}
	if err != nil {
		ps.close()
		return nil, fmt.Errorf("subscribers' process: %w", err)
	}
	return ps, nil
}

// readLine reads one answer of the child, for at most d.
func (ps *processSubscribers) readLine(ctx context.Context, d time.Duration) (string, error) {
	type answer struct {
		line string
		err  error
	}
	ch := make(chan answer, 1)
	go func() {
		line, err := ps.out.ReadString('\n')
		ch <- answer{strings.TrimSuffix(line, "\n"), err}
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case a := <-ch:
		return a.line, a.err
	case <-t.C:
		ps.cmd.Process.Kill()
		return "", errors.New("no answer")
	case <-ctx.Done():
		ps.cmd.Process.Kill()
		return "", ctx.Err()
	}
}

func (ps *processSubscribers) waitAll(ctx context.Context, cids []string, d time.Duration) bool {
	if _, err := fmt.Fprintf(ps.in, "wait %d %s\n", d.Milliseconds(), strings.Join(cids, " ")); err != nil {
		return false
	}
	line, err := ps.readLine(ctx, d+time.Minute)
	return err == nil && line == "ok"
}

// dumped is one subscriber's results as the child sends them.
type dumped struct {
	Got map[string]int64 `json:"got"` // record CID → Unix nanoseconds
	Err string           `json:"err,omitempty"`
}

func (ps *processSubscribers) results() ([]subscriberResult, error) {
	if _, err := io.WriteString(ps.in, "dump\n"); err != nil {
		return nil, fmt.Errorf("subscribers' process: %w", err)
	}
	line, err := ps.readLine(context.Background(), time.Minute)
	if err != nil {
		return nil, fmt.Errorf("subscribers' process: %w", err)
	}
	var ds []dumped
	if err := json.Unmarshal([]byte(line), &ds); err != nil {
		return nil, fmt.Errorf("subscribers' process: %w", err)
	}
	out := make([]subscriberResult, len(ds))
	for i, d := range ds {
		out[i].got = make(map[string]time.Time, len(d.Got))
		for c, ns := range d.Got {
			out[i].got[c] = time.Unix(0, ns)
		}
		if d.Err != "" {
			out[i].err = errors.New(d.Err)
		}
	}
	return out, nil
}

func (ps *processSubscribers) close() {
	ps.in.Close()
	select {
	case <-ps.done:
	case <-time.After(10 * time.Second):
		ps.cmd.Process.Kill()
		<-ps.done
	}
}

// RunSubscriberProcess is the subscribers' side of scenario 5 run in a
// process of its own (`pds bench-subscribers`): it attaches n subscribers
// to server's firehose and answers the parent's commands on in and out
// until in closes.
func RunSubscriberProcess(ctx context.Context, in io.Reader, out io.Writer, server, bypass string, n int, timeout time.Duration) error {
	w := bufio.NewWriter(out)
	reply := func(s string) error {
		w.WriteString(s)
		w.WriteByte('\n')
		return w.Flush()
	}
	subs, err := dialSubscribers(ctx, server, bypass, n, timeout)
	if err != nil {
		reply("error " + strings.ReplaceAll(err.Error(), "\n", " "))
		return err
	}
	defer subs.close()
	if err := reply("ready"); err != nil {
		return err
	}
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 0, 1<<16), 64<<20)
	for sc.Scan() {
		cmd, rest, _ := strings.Cut(sc.Text(), " ")
		switch cmd {
		case "wait":
			fields := strings.Fields(rest)
			if len(fields) == 0 {
				return reply("error bad wait")
			}
			ms, err := strconv.Atoi(fields[0])
			if err != nil {
				return reply("error bad wait")
			}
			ans := "timeout"
			if subs.waitAll(ctx, fields[1:], time.Duration(ms)*time.Millisecond) {
				ans = "ok"
			}
			if err := reply(ans); err != nil {
				return err
			}
		case "dump":
			res, _ := subs.results()
			ds := make([]dumped, len(res))
			for i, r := range res {
				ds[i].Got = make(map[string]int64, len(r.got))
				for c, at := range r.got {
					ds[i].Got[c] = at.UnixNano()
				}
				if r.err != nil {
					ds[i].Err = r.err.Error()
				}
			}
			b, err := json.Marshal(ds)
			if err != nil {
				return err
			}
			if err := reply(string(b)); err != nil {
				return err
			}
		default:
			return reply("error unknown command " + strconv.Quote(cmd))
		}
	}
	return sc.Err()
}
