// Package bench is a load generator for any AT Protocol PDS. It speaks
// only standard XRPC methods over HTTP and WebSocket (createSession,
// createRecord, getRecord, applyWrites, sync.getRepo, sync.subscribeRepos,
// repo.uploadBlob, sync.getBlob), so the same run can be pointed at this
// server, Bluesky's reference PDS or another implementation, and the
// figures compared on one machine.
//
// Every scenario is bounded in count and in time, records each request's
// latency, and counts failures; a run with any failure is reported as
// failed. When the server runs on the same machine its resident memory is
// sampled from /proc.
package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
)

// Scenario names, for Options.Skip and the report.
const (
	CreateSeq        = "create-seq"
	CreateConcurrent = "create-concurrent"
	GetRecord        = "get-record"
	Export           = "export"
	Firehose         = "firehose"
	Blob             = "blob"
	ApplyWrites      = "apply-writes"
)

// ScenarioNames lists the scenarios in the README's numbering (1–7).
var ScenarioNames = []string{CreateSeq, CreateConcurrent, GetRecord, Export, Firehose, Blob, ApplyWrites}

func scenarioNumber(name string) int { return slices.Index(ScenarioNames, name) + 1 }

// MaxBatch is the most writes applyWrites takes in one call.
const MaxBatch = 200

// Options configure a run. Zero counts take the defaults of Defaults.
type Options struct {
	// Server is the PDS origin, e.g. https://pds.example.com.
	Server     string
	Identifier string // handle or DID of an account the run may fill with records
	Password   string
	// RateLimitBypass is sent as x-ratelimit-bypass, for servers that
	// exempt trusted load tests from rate limits.
	RateLimitBypass string
	// PLCURL is the PLC directory used to find the account's signing key
	// when createSession returns no DID document (the reference PDS only
	// does with PDS_ENABLE_DID_DOC_WITH_SESSION); empty means
	// https://plc.directory.
	PLCURL string

	Warmup      int           // unmeasured createRecord calls before scenario 1
	Records     int           // 1: sequential createRecord calls (also the writes of 5)
	Writers     int           // 2: concurrent writers
	PerWriter   int           // 2: createRecord calls per writer
	Readers     int           // 3: concurrent getRecord readers
	ReadTime    time.Duration // 3: how long the readers read
	MaxReads    int           // 3: total getRecord calls at most
	ExportRuns  int           // 4: full getRepo exports
	Subscribers int           // 5: firehose subscribers attached during sequential writes
	Blobs       int           // 6: blobs uploaded and downloaded
	BlobSize    int           // 6: bytes per blob
	Batches     int           // 7: applyWrites calls
	BatchSize   int           // 7: creates per applyWrites call (at most 200)

	// MaxTime bounds each scenario; one that reaches it stops early and
	// says so in its notes.
	MaxTime time.Duration
	// RequestTimeout bounds each request.
	RequestTimeout time.Duration
	// Skip names scenarios not to run.
	Skip []string

	// PID is the server's process, for memory sampling; 0 finds it by the
	// server's port when the server is on this machine, -1 disables
	// sampling.
	PID int
	// Profiler, when set, captures a CPU profile of the server during
	// each scenario and a heap profile at the end.
	Profiler Profiler
	// Local marks a server the tool started itself (for the report).
	Local bool
	// SubscriberProcess, when set, returns the command of a process that
	// runs the firehose subscribers of scenario 5 (`pds bench-subscribers`,
	// see RunSubscriberProcess). The sequential writer of scenarios 1 and 5
	// then runs on one thread: it makes one request at a time, and with a
	// second thread every round trip is handed between the two. Left nil,
	// the subscribers run in this process and the writer uses every core,
	// as the subscribers then need them.
	SubscriberProcess func() *exec.Cmd
	// Progress receives one line per scenario as the run goes.
	Progress io.Writer
}

// Defaults are the counts of a run with no scenario flags: 10,100 records
// in all (100 to warm up, then 1,000 + 1,000 with subscribers + 4×500 +
// 30×200), so scenarios 3 and 4 read a repository of about 10,000 records.
var Defaults = Options{
	Warmup:         100,
	Records:        1000,
	Writers:        4,
	PerWriter:      500,
	Readers:        8,
	ReadTime:       10 * time.Second,
	MaxReads:       1_000_000,
	ExportRuns:     5,
	Subscribers:    100,
	Blobs:          20,
	BlobSize:       1 << 20,
	Batches:        30,
	BatchSize:      MaxBatch,
	MaxTime:        2 * time.Minute,
	RequestTimeout: 60 * time.Second,
}

// OptionsError is an impossible combination of options.
type OptionsError struct{ Msg string }

func (e *OptionsError) Error() string { return e.Msg }

func optionsError(format string, args ...any) error {
	return &OptionsError{Msg: fmt.Sprintf(format, args...)}
}

// Check fills in default counts and reports impossible scenario options
// (an *OptionsError), without looking at the server or the account.
func (o *Options) Check() error {
	d := Defaults
	setInt := func(p *int, def int) {
		if *p == 0 {
			*p = def
		}
	}
	setInt(&o.Warmup, d.Warmup)
	setInt(&o.Records, d.Records)
	setInt(&o.Writers, d.Writers)
	setInt(&o.PerWriter, d.PerWriter)
	setInt(&o.Readers, d.Readers)
	setInt(&o.MaxReads, d.MaxReads)
	setInt(&o.ExportRuns, d.ExportRuns)
	setInt(&o.Subscribers, d.Subscribers)
	setInt(&o.Blobs, d.Blobs)
	setInt(&o.BlobSize, d.BlobSize)
	setInt(&o.Batches, d.Batches)
	setInt(&o.BatchSize, d.BatchSize)
	if o.ReadTime == 0 {
		o.ReadTime = d.ReadTime
	}
	if o.MaxTime == 0 {
		o.MaxTime = d.MaxTime
	}
	if o.RequestTimeout == 0 {
		o.RequestTimeout = d.RequestTimeout
	}
	for _, n := range []int{o.Warmup, o.Records, o.Writers, o.PerWriter, o.Readers, o.MaxReads, o.ExportRuns, o.Subscribers, o.Blobs, o.BlobSize, o.Batches, o.BatchSize} {
		if n < 0 {
			return optionsError("counts must be positive")
		}
	}
	if o.BatchSize > MaxBatch {
		return optionsError("batch size %d is more than applyWrites takes (%d)", o.BatchSize, MaxBatch)
	}
	if o.ReadTime < 0 || o.MaxTime < 0 || o.RequestTimeout < 0 {
		return optionsError("durations must be positive")
	}
	for _, s := range o.Skip {
		if !slices.Contains(ScenarioNames, s) {
			return optionsError("unknown scenario %q (scenarios: %s)", s, strings.Join(ScenarioNames, ", "))
		}
	}
	return nil
}

func (o *Options) fill() error {
	if err := o.Check(); err != nil {
		return err
	}
	u, err := url.Parse(o.Server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return optionsError("server %q is not an http:// or https:// URL", o.Server)
	}
	if o.Identifier == "" || o.Password == "" {
		return optionsError("an identifier and a password are needed to create a session")
	}
	return nil
}

// run is the state of one run.
type run struct {
	opts   Options
	c      *client
	did    string
	key    atcrypto.PublicKey
	report *Report
	mem    *sampler

	mu    sync.Mutex
	rkeys []string // posts written so far, for the readers
	seqPS float64  // scenario 1's rate, for scenario 5's ratio
}

// Run logs in, runs every scenario not skipped, and returns the report.
// The error is only for a run that could not start (bad options, no
// session); failed requests are counted in the report (Report.Errors).
func Run(ctx context.Context, opts Options) (*Report, error) {
	if err := opts.fill(); err != nil {
		return nil, err
	}
	conns := max(opts.Writers, opts.Readers, 8) + 4
	r := &run{opts: opts, c: newClient(opts.Server, opts.RateLimitBypass, conns, opts.RequestTimeout)}
	defer r.c.http.CloseIdleConnections()
	sess, err := r.c.login(ctx, opts.Identifier, opts.Password)
	if err != nil {
		return nil, fmt.Errorf("create session: %w", err)
	}
	r.did = sess.DID
	r.report = &Report{Server: strings.TrimRight(opts.Server, "/"), Local: opts.Local, DID: sess.DID, Started: time.Now(), Machine: machine()}
	if r.key, err = signingKey(sess.DIDDoc); err != nil || r.key == nil {
		// No usable document in the session: resolve the DID instead.
		r.key, err = resolveKey(ctx, sess.DID, opts.PLCURL)
		if err != nil {
			r.report.Notes = append(r.report.Notes, "exports are checked without the commit signature: createSession returned no DID document with a signing key, and resolving the DID failed: "+err.Error())
		}
	}
	r.startSampler()
	r.warmup(ctx)

	steps := []struct {
		name string
		fn   func(context.Context) []Result
	}{
		// 5 follows 1 so their write rates are compared under the same
		// conditions; 7 runs before 3 and 4 so that the reads and the
		// export see the whole repository.
		{CreateSeq, r.createSeq},
		{Firehose, r.firehose},
		{CreateConcurrent, r.createConcurrent},
		{ApplyWrites, r.applyWrites},
		{GetRecord, r.getRecord},
		{Export, r.export},
		{Blob, r.blob},
	}
	for _, st := range steps {
		if slices.Contains(opts.Skip, st.name) {
			r.report.Notes = append(r.report.Notes, fmt.Sprintf("scenario %d %s skipped", scenarioNumber(st.name), st.name))
			continue
		}
		if ctx.Err() != nil {
			break
		}
		r.progress("scenario %d %s", scenarioNumber(st.name), st.name)
		r.profileStart(ctx, st.name)
		results := st.fn(ctx)
		r.profileStop(ctx, st.name)
		for i := range results {
			res := &results[i]
			res.Scenario, res.Name = scenarioNumber(st.name), st.name
			if r.mem != nil {
				if m, err := r.mem.now(); err == nil {
					res.RSSKB = m.RSSKB
				}
			}
			r.report.Errors += res.Errors
			r.progress("  %s: %d ok, %d errors, %s", res.Title, res.Count, res.Errors, rate(res.PerSecond, res.Unit))
		}
		r.report.Results = append(r.report.Results, results...)
	}
	if opts.Profiler != nil {
		if f, err := opts.Profiler.Heap(ctx); err != nil {
			r.report.Notes = append(r.report.Notes, "heap profile: "+err.Error())
		} else {
			r.report.Profiles = append(r.report.Profiles, f)
		}
	}
	if r.mem != nil {
		r.report.RSS = r.mem.finish()
	}
	r.report.Budget = budget(r.report.Results)
	if err := ctx.Err(); err != nil {
		r.report.Notes = append(r.report.Notes, "run interrupted: "+err.Error())
		r.report.Errors++
	}
	return r.report, nil
}

// warmup writes a few records first, unmeasured, so that scenario 1 does
// not pay alone for cold caches, connection set-up and the server's first
// garbage collections, and scenarios 1 and 5 compare fairly.
func (r *run) warmup(ctx context.Context) {
	if r.opts.Warmup <= 0 || ctx.Err() != nil {
		return
	}
	r.progress("warm-up: %d createRecord calls", r.opts.Warmup)
	t, _ := r.sequentialCreates(ctx, "warmup", r.opts.Warmup, nil)
	res := t.result("", "", 0, 1)
	note := fmt.Sprintf("warm-up: %d createRecord calls before scenario 1, not measured", res.Count)
	if res.Errors > 0 {
		note += fmt.Sprintf("; %d failed, the first: %s", res.Errors, res.FirstError)
		r.report.Errors += res.Errors
	}
	r.report.Notes = append(r.report.Notes, note)
}

func (r *run) progress(format string, args ...any) {
	if r.opts.Progress != nil {
		fmt.Fprintf(r.opts.Progress, format+"\n", args...)
	}
}

// startSampler begins sampling the server's memory when its process is
// known or can be found by its port on this machine.
func (r *run) startSampler() {
	pid := r.opts.PID
	if pid < 0 {
		return
	}
	if pid == 0 {
		u, _ := url.Parse(r.opts.Server)
		if !isLoopbackHost(u.Hostname()) {
			return
		}
		port := u.Port()
		if port == "" {
			port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
		}
		var p int
		fmt.Sscan(port, &p)
		found, err := PIDByPort(p)
		if err != nil {
			r.report.Notes = append(r.report.Notes, "server memory not sampled: "+err.Error())
			return
		}
		pid = found
	}
	if _, err := readMemory(pid); err != nil {
		r.report.Notes = append(r.report.Notes, fmt.Sprintf("server memory not sampled: pid %d: %v", pid, err))
		return
	}
	r.mem = startSampler(pid, 100*time.Millisecond)
}

func isLoopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

func (r *run) profileStart(ctx context.Context, name string) {
	if r.opts.Profiler == nil {
		return
	}
	if err := r.opts.Profiler.StartCPU(ctx); err != nil {
		r.report.Notes = append(r.report.Notes, fmt.Sprintf("CPU profile of %s: %v", name, err))
	}
}

func (r *run) profileStop(ctx context.Context, name string) {
	if r.opts.Profiler == nil {
		return
	}
	f, err := r.opts.Profiler.StopCPU(ctx, name)
	if err != nil {
		r.report.Notes = append(r.report.Notes, fmt.Sprintf("CPU profile of %s: %v", name, err))
		return
	}
	r.report.Profiles = append(r.report.Profiles, f)
}

// addKeys remembers written post record keys for the readers.
func (r *run) addKeys(keys ...string) {
	r.mu.Lock()
	r.rkeys = append(r.rkeys, keys...)
	r.mu.Unlock()
}

// tally counts the outcomes of one kind of request.
type tally struct {
	hist     Histogram
	mu       sync.Mutex
	ok       int
	errors   int
	firstErr string
}

func (t *tally) add(d time.Duration, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err != nil {
		t.errors++
		if t.firstErr == "" {
			t.firstErr = err.Error()
		}
		return
	}
	t.ok++
	t.hist.Record(d)
}

// result turns a tally into a report row; elapsed is the wall time of the
// whole operation and per the number of units (records, bytes) per
// successful request for the rate.
func (t *tally) result(title, unit string, elapsed time.Duration, per float64) Result {
	t.mu.Lock()
	defer t.mu.Unlock()
	res := Result{Title: title, Count: t.ok, Errors: t.errors, FirstError: t.firstErr,
		Seconds: elapsed.Seconds(), Unit: unit, Latency: t.hist.Summary()}
	if elapsed > 0 {
		res.PerSecond = float64(t.ok) * per / elapsed.Seconds()
	}
	return res
}

// stoppedEarly is the note of a scenario that reached its time bound.
func stoppedEarly(done, want int, bound time.Duration) []string {
	if done >= want {
		return nil
	}
	return []string{fmt.Sprintf("stopped at the %s time bound after %d of %d", bound, done, want)}
}
