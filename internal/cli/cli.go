// Package cli implements the pds command: one file per subcommand. Every
// command reads its settings through internal/config, prompts only when
// attached to a terminal, and takes flags for everything so scripts never
// need a prompt.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"stratus/internal/config"
)

// IO is the process environment a command runs in; tests supply their own.
type IO struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	Getenv func(string) string
}

// interactive reports whether prompts can be shown: stdin must be a
// terminal.
func (e IO) interactive() bool {
	f, ok := e.Stdin.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// usageError marks a command-line mistake (exit status 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// Main runs the pds command with args (without the program name) and returns
// the process exit status.
func Main(ctx context.Context, args []string, e IO) int {
	root := newRoot(e)
	root.SetArgs(args)
	root.SetIn(e.Stdin)
	root.SetOut(e.Stdout)
	root.SetErr(e.Stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	fmt.Fprintln(e.Stderr, "error:", err)
	var ue usageError
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}

func newRoot(e IO) *cobra.Command {
	root := &cobra.Command{
		Use:   "pds",
		Short: "Stratus: a self-hosted AT Protocol Personal Data Server",
		Long: `Stratus hosts an AT Protocol account: its signed repository, its
identity document and its sync endpoints, in one binary with an embedded
SQLite database.

Settings live in a data directory (--data-dir, env PDS_DATA_DIR, default
"` + config.DefaultDataDir + `"). Every setting can also be given as a flag
--<name> or an environment variable PDS_<NAME>.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().String("data-dir", "", "data directory (env PDS_DATA_DIR, default \""+config.DefaultDataDir+"\")")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err.Error()} })
	root.AddCommand(newInitCmd(e), newServeCmd(e), newActivateCmd(e, true), newActivateCmd(e, false), newVersionCmd(e))
	root.AddCommand(newAppPasswordCmd(e), newOAuthCmd(e), newSecretCmd(e), newRequestCrawlCmd(e), newEmitIdentityCmd(e))
	root.AddCommand(newHandleCmd(e), newIdentityCmd(e))
	root.AddCommand(newCheckCmd(e), newBackupCmd(e), newRestoreCmd(e), newExportCmd(e))
	root.AddCommand(newMigrateCmd(e))
	root.AddCommand(newStatusCmd(e), newDashboardCmd(e))
	root.AddCommand(newBenchCmd(e), newBenchSubscribersCmd(e))
	// Argument mistakes are usage errors (exit status 2), like flag errors.
	root.Args = func(cmd *cobra.Command, args []string) error {
		if len(args) > 0 {
			return usageError{fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())}
		}
		return nil
	}
	root.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
	for _, sub := range root.Commands() {
		if check := sub.Args; check != nil {
			sub.Args = func(cmd *cobra.Command, args []string) error {
				if err := check(cmd, args); err != nil {
					return usageError{err.Error()}
				}
				return nil
			}
		}
	}
	return root
}

// dataDir returns the data directory from the flag, PDS_DATA_DIR, or the
// default, in that order.
func dataDir(cmd *cobra.Command, e IO) string {
	if d, _ := cmd.Flags().GetString("data-dir"); d != "" {
		return d
	}
	if d := e.Getenv("PDS_DATA_DIR"); d != "" {
		return d
	}
	return config.DefaultDataDir
}

// addConfigFlags registers a flag for every setting (secrets only when
// withSecrets), named as in the files.
func addConfigFlags(cmd *cobra.Command, withSecrets bool) {
	for _, f := range config.Fields() {
		if f.Secret && !withSecrets {
			continue
		}
		cmd.Flags().String(f.Name, "", f.Usage+" (env "+f.Env()+")")
	}
}

// loadConfig reads the data directory, then applies PDS_* variables, then
// flags given on the command line: files < environment < flags.
func loadConfig(cmd *cobra.Command, e IO) (*config.Config, error) {
	c, err := config.Load(dataDir(cmd, e))
	if err != nil {
		return nil, err
	}
	if err := c.ApplyEnv(e.Getenv); err != nil {
		return nil, err
	}
	if err := applyFlags(cmd, c); err != nil {
		return nil, err
	}
	return c, nil
}

func applyFlags(cmd *cobra.Command, c *config.Config) error {
	for _, f := range config.Fields() {
		fl := cmd.Flags().Lookup(f.Name)
		if fl == nil || !fl.Changed {
			continue
		}
		if err := f.SetFlag(c, fl.Value.String()); err != nil {
			return usageError{"--" + err.Error()}
		}
	}
	return nil
}
