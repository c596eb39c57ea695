package cli

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"stratus/internal/bench"
)

func newBenchCmd(e IO) *cobra.Command {
	o := bench.Defaults
	var (
		local, asJSON, serverLog bool
		profileDir, pprofURL     string
		serveArgs                []string
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure a PDS: writes, reads, export, firehose, blobs",
		Long: `bench is a load generator for any AT Protocol PDS (this one, Bluesky's
reference PDS, or another implementation). It logs in with createSession
and uses only standard XRPC methods, so figures of different servers can be
compared on one machine. Use a throwaway account: the run writes thousands
of records to it.

After --warmup unmeasured writes, the scenarios (each bounded by its
count and by --max-time):
  1 create-seq         sequential createRecord (--records)
  2 create-concurrent  --writers concurrent writers × --per-writer createRecord
  3 get-record         --readers concurrent getRecord readers for --read-time
  4 export             --exports full sync.getRepo exports; the first is
                       verified (block hashes, commit signature, MST)
  5 firehose           --subscribers subscribeRepos clients attached while
                       --records sequential writes run: write rate and
                       delivery latency
  6 blob               --blobs uploadBlob + getBlob of --blob-size bytes
  7 apply-writes       --batches applyWrites calls of --batch-size creates

With --local a fresh server is started as a child process on a temporary
data directory, measured and stopped. The server's resident memory is
sampled from /proc when it runs on this machine (--pid, or found by its
port). Any failed request makes the command exit 1, after the report.`,
		Example: `  pds bench --local
  pds bench --local --json --profile ./profiles
  pds bench --server http://127.0.0.1:2583 --identifier bench.example.com --password "$PW"`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.Password == "" {
				o.Password = e.Getenv("PDS_BENCH_PASSWORD")
			}
			ctx := cmd.Context()
			// Zero means "the default" to the bench package; on the
			// command line it is a mistake.
			for _, name := range []string{"warmup", "records", "writers", "per-writer", "readers", "read-time", "max-reads", "exports",
				"subscribers", "blobs", "blob-size", "batches", "batch-size", "max-time", "timeout"} {
				if v := cmd.Flags().Lookup(name).Value.String(); v == "0" || v == "0s" || strings.HasPrefix(v, "-") {
					return usageError{fmt.Sprintf("--%s must be positive (use --skip to leave a scenario out)", name)}
				}
			}
			if err := o.Check(); err != nil {
				return usageError{err.Error()}
			}
			if local {
				if o.Server != "" || o.Identifier != "" || o.Password != "" || o.PID != 0 || pprofURL != "" {
					return usageError{"--local starts its own server: --server, --identifier, --password, --pid and --pprof-url do not apply"}
				}
				exe, err := os.Executable()
				if err != nil {
					return fmt.Errorf("find the pds binary to start: %w", err)
				}
				lo := bench.LocalOptions{Binary: exe, ServeArgs: serveArgs, Debug: profileDir != "", Env: os.Environ()}
				if serverLog {
					lo.Log = e.Stderr
				}
				fmt.Fprintln(e.Stderr, "starting a local server...")
				l, err := bench.StartLocal(ctx, lo)
				if err != nil {
					return err
				}
				defer func() {
					if err := l.Stop(); err != nil {
						fmt.Fprintln(e.Stderr, "warning:", err)
					}
				}()
				o.Server, o.Identifier, o.Password, o.PID, o.Local = l.URL, l.Identifier, l.Password, l.PID, true
				pprofURL = l.DebugURL
			} else {
				if len(serveArgs) > 0 {
					return usageError{"--serve-arg only applies with --local"}
				}
				if o.Server == "" || o.Identifier == "" || o.Password == "" {
					return usageError{"give --server, --identifier and --password (env PDS_BENCH_PASSWORD), or --local"}
				}
				if _, err := parseServerURL(o.Server); err != nil {
					return err
				}
			}
			if profileDir != "" {
				if pprofURL == "" {
					return usageError{"--profile needs the server's debug listener: use --local, or --pprof-url with a server started with --debug-addr"}
				}
				o.Profiler = &bench.HTTPProfiler{Base: pprofURL, Dir: profileDir}
			}
			if exe, err := os.Executable(); err == nil {
				// The firehose subscribers run in a process of their own,
				// so the sequential writer can have one thread.
				o.SubscriberProcess = func() *exec.Cmd {
					c := exec.CommandContext(ctx, exe, "bench-subscribers")
					c.Stderr = e.Stderr
					return c
				}
			}
			o.Progress = e.Stderr
			rep, err := bench.Run(ctx, o)
			if oe := (*bench.OptionsError)(nil); errors.As(err, &oe) {
				return usageError{oe.Msg}
			}
			if err != nil {
				return err
			}
			if asJSON {
				err = rep.WriteJSON(e.Stdout)
			} else {
				err = rep.WriteMarkdown(e.Stdout)
			}
			if err != nil {
				return err
			}
			if rep.Errors > 0 {
				return fmt.Errorf("%d requests failed", rep.Errors)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&local, "local", false, "start a fresh local server on a temporary data directory, measure it and stop it")
	f.StringVar(&o.Server, "server", "", "URL of the PDS to measure")
	f.StringVar(&o.Identifier, "identifier", "", "handle or DID of the account to log in as (a throwaway account)")
	f.StringVar(&o.Password, "password", "", "its password or an app password (env PDS_BENCH_PASSWORD)")
	f.StringVar(&o.RateLimitBypass, "ratelimit-bypass", "", "value of the x-ratelimit-bypass header, for servers that exempt trusted load tests")
	f.StringVar(&o.PLCURL, "plc-url", "", "PLC directory for finding the account's signing key when createSession returns no DID document (default https://plc.directory)")
	f.BoolVar(&asJSON, "json", false, "print the report as JSON instead of a markdown table")
	f.StringVar(&profileDir, "profile", "", "write CPU profiles of the server per scenario and a heap profile to this directory")
	f.StringVar(&pprofURL, "pprof-url", "", "debug listener of a server started with --debug-addr, for --profile without --local")
	f.IntVar(&o.PID, "pid", 0, "process ID of the server, for memory sampling (default: found by the port when the server is local; -1: off)")
	f.StringSliceVar(&serveArgs, "serve-arg", nil, "extra flag for the --local server, e.g. --serve-arg=--sync-commits=false (repeatable)")
	f.BoolVar(&serverLog, "server-log", false, "show the --local server's log on stderr")

	f.IntVar(&o.Warmup, "warmup", o.Warmup, "unmeasured createRecord calls before scenario 1")
	f.IntVar(&o.Records, "records", o.Records, "1, 5: sequential createRecord calls")
	f.IntVar(&o.Writers, "writers", o.Writers, "2: concurrent writers")
	f.IntVar(&o.PerWriter, "per-writer", o.PerWriter, "2: createRecord calls per writer")
	f.IntVar(&o.Readers, "readers", o.Readers, "3: concurrent getRecord readers")
	f.DurationVar(&o.ReadTime, "read-time", o.ReadTime, "3: how long the readers read")
	f.IntVar(&o.MaxReads, "max-reads", o.MaxReads, "3: getRecord calls at most")
	f.IntVar(&o.ExportRuns, "exports", o.ExportRuns, "4: full getRepo exports")
	f.IntVar(&o.Subscribers, "subscribers", o.Subscribers, "5: firehose subscribers")
	f.IntVar(&o.Blobs, "blobs", o.Blobs, "6: blobs to upload and download")
	f.IntVar(&o.BlobSize, "blob-size", o.BlobSize, "6: bytes per blob")
	f.IntVar(&o.Batches, "batches", o.Batches, "7: applyWrites calls")
	f.IntVar(&o.BatchSize, "batch-size", o.BatchSize, "7: creates per applyWrites call (at most 200)")
	f.DurationVar(&o.MaxTime, "max-time", o.MaxTime, "time bound of each scenario")
	f.DurationVar(&o.RequestTimeout, "timeout", o.RequestTimeout, "time bound of each request")
	f.StringSliceVar(&o.Skip, "skip", nil, "scenarios not to run ("+strings.Join(bench.ScenarioNames, ", ")+")")
	return cmd
}

// newBenchSubscribersCmd is the firehose subscribers' process of `pds
// bench` (scenario 5), which starts it; not for direct use.
func newBenchSubscribersCmd(e IO) *cobra.Command {
	var (
		server, bypass string
		n              int
		timeout        time.Duration
	)
	cmd := &cobra.Command{
		Use:    "bench-subscribers",
		Short:  "The firehose subscribers of pds bench (started by it)",
		Hidden: true,
		Args:   noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return bench.RunSubscriberProcess(cmd.Context(), e.Stdin, e.Stdout, server, bypass, n, timeout)
		},
	}
	f := cmd.Flags()
	f.StringVar(&server, "server", "", "PDS origin")
	f.StringVar(&bypass, "ratelimit-bypass", "", "x-ratelimit-bypass value")
	f.IntVar(&n, "subscribers", 1, "subscribers to attach")
	f.DurationVar(&timeout, "timeout", time.Minute, "time bound of each connection attempt")
	return cmd
}
