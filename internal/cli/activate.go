package cli

import (
	"bufio"
	"fmt"
	"strings"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/spf13/cobra"

	"stratus/internal/server"
)

func newActivateCmd(e IO, activate bool) *cobra.Command {
	var yes bool
	name, verb := "activate", "Activate"
	if !activate {
		name, verb = "deactivate", "Deactivate"
	}
	cmd := &cobra.Command{
		Use:   name,
		Short: verb + " the account (a deactivated account refuses writes and is not served to relays)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := loadConfig(cmd, e)
			if err != nil {
				return err
			}
			if !yes {
				if !e.interactive() {
					return usageError{fmt.Sprintf("refusing to %s %s without confirmation; pass -y", name, c.DID)}
				}
				fmt.Fprintf(e.Stdout, "%s %s (%s)? [y/N] ", verb, c.Handle, c.DID)
				line, _ := bufio.NewReader(e.Stdin).ReadString('\n')
				if a := strings.ToLower(strings.TrimSpace(line)); a != "y" && a != "yes" {
					fmt.Fprintln(e.Stdout, "cancelled")
					return nil
				}
			}
			srv, err := server.Open(cmd.Context(), c, newLogger(e, "warn"))
			if err != nil {
				return err
			}
			defer srv.Close()
			did := syntax.DID(c.DID)
			before, err := srv.Accounts().Get(cmd.Context(), did)
			if err != nil {
				return err
			}
			if activate {
				err = srv.Accounts().Activate(cmd.Context(), did)
			} else {
				err = srv.Accounts().Deactivate(cmd.Context(), did)
			}
			if err != nil {
				return err
			}
			after, err := srv.Accounts().Get(cmd.Context(), did)
			if err != nil {
				return err
			}
			if before.Status == after.Status {
				fmt.Fprintf(e.Stdout, "%s is already %s\n", c.DID, after.Status)
			} else {
				fmt.Fprintf(e.Stdout, "%s is now %s\n", c.DID, after.Status)
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	return cmd
}

func newVersionCmd(e IO) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			fmt.Fprintf(e.Stdout, "stratus %s\n", server.Version)
			return nil
		},
	}
}
