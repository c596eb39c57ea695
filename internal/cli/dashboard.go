package cli

import (
	"os"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"stratus/internal/dash"
)

func newDashboardCmd(e IO) *cobra.Command {
	var interval time.Duration
	cmd := &cobra.Command{
		Use:   "dashboard",
		Short: "Live terminal dashboard of the server's state (q quits, r refreshes)",
		Long: `Show a live dashboard of the running server: writes and requests per
second, the firehose and its subscribers, sessions, storage, identity and
the newest firehose events, refreshed every --interval. Keys: q quits,
r refreshes now. It needs no mouse, so it works over SSH.

The server is found as for "pds status". When stdout is not a terminal,
the dashboard prints the "pds status" report once instead.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if interval < 200*time.Millisecond {
				return usageError{"--interval must be at least 200ms"}
			}
			src, err := openStatusSource(cmd, e)
			if err != nil {
				return err
			}
			defer src.Close()
			if !e.interactive() || !isTerminal(e.Stdout) {
				r, err := src.Fetch(cmd.Context())
				if err != nil {
					return err
				}
				return printStatus(e, r, false)
			}
			return dash.Run(cmd.Context(), dash.Options{Fetch: src.Fetch, Interval: interval, Input: e.Stdin, Output: e.Stdout})
		},
	}
	addClientFlags(cmd)
	cmd.Flags().DurationVar(&interval, "interval", 2*time.Second, "time between refreshes")
	return cmd
}

// isTerminal reports whether w is a terminal.
func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
