package cli

import (
	"bufio"
	"fmt"
	"net/url"
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
			// A running server is told over HTTP, like every command that
			// changes server state; when none answers at the local address,
			// the data directory is changed directly.
			explicit, _ := cmd.Flags().GetString("server")
			if explicit == "" {
				explicit = e.Getenv("PDS_SERVER")
			}
			if client, err := newAdminClient(cmd, e); err == nil {
				before, err := remoteStatus(cmd, client, c.DID)
				switch {
				case err == nil:
					nsid := "com.atproto.server.deactivateAccount"
					if activate {
						nsid = "com.atproto.server.activateAccount"
					}
					if err := client.call(cmd.Context(), nsid, struct{}{}, nil); err != nil {
						return err
					}
					after, err := remoteStatus(cmd, client, c.DID)
					if err != nil {
						return err
					}
					reportStatus(e, c.DID, before, after)
					return nil
				case explicit != "" || !strings.HasPrefix(err.Error(), "cannot reach the PDS"):
					return err
				}
			} else if explicit != "" {
				return err
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
			reportStatus(e, c.DID, string(before.Status), string(after.Status))
			return nil
		},
	}
	addClientFlags(cmd)
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	return cmd
}

// remoteStatus asks a running server for the account's status.
func remoteStatus(cmd *cobra.Command, client *adminClient, did string) (string, error) {
	var out struct {
		Active bool   `json:"active"`
		Status string `json:"status"`
	}
	if err := client.call(cmd.Context(), "com.atproto.sync.getRepoStatus?did="+url.QueryEscape(did), nil, &out); err != nil {
		return "", err
	}
	if out.Active {
		return "active", nil
	}
	return out.Status, nil
}

func reportStatus(e IO, did, before, after string) {
	if before == after {
		fmt.Fprintf(e.Stdout, "%s is already %s\n", did, after)
	} else {
		fmt.Fprintf(e.Stdout, "%s is now %s\n", did, after)
	}
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
