package cli

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

// OAuthGrant is an OAuth grant as the server reports it.
type OAuthGrant struct {
	ID              string `json:"id"`
	DID             string `json:"did"`
	ClientID        string `json:"clientId"`
	ClientName      string `json:"clientName"`
	Scope           string `json:"scope"`
	CreatedAt       string `json:"createdAt"`
	LastRefreshedAt string `json:"lastRefreshedAt"`
	ExpiresAt       string `json:"expiresAt"`
}

func newOAuthCmd(e IO) *cobra.Command {
	return newGroupCmd("oauth",
		"List and revoke OAuth grants (apps signed in with OAuth)",
		`An OAuth grant is the session of one app that the account owner approved
on the server's consent page. It lasts until it expires, the app revokes it,
or the operator revokes it here; revoking ends its access and refresh tokens
at once.

These commands talk to the running server ("pds serve") with the admin
token, like "pds app-password".`,
		`  pds oauth list
  pds oauth list --json
  pds oauth revoke grant-3q5...`,
		newOAuthListCmd(e), newOAuthRevokeCmd(e))
}

func newOAuthListCmd(e IO) *cobra.Command {
	var js bool
	cmd := &cobra.Command{
		Use:     "list",
		Short:   "List live OAuth grants, newest first",
		Example: "  pds oauth list\n  pds oauth list --json",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			client, err := newAdminClient(cmd, e)
			if err != nil {
				return err
			}
			var out struct {
				Grants []OAuthGrant `json:"grants"`
			}
			if err := client.call(cmd.Context(), "app.stratus.admin.listOAuthGrants", nil, &out); err != nil {
				return err
			}
			if out.Grants == nil {
				out.Grants = []OAuthGrant{}
			}
			if js {
				return writeJSONOut(e, out.Grants)
			}
			if len(out.Grants) == 0 {
				fmt.Fprintln(e.Stdout, "No OAuth grants.")
				return nil
			}
			tw := tabwriter.NewWriter(e.Stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tAPP\tSCOPE\tCREATED\tEXPIRES")
			for _, g := range out.Grants {
				name := g.ClientName
				if name != g.ClientID {
					name += " (" + g.ClientID + ")"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", g.ID, name, g.Scope, formatTime(g.CreatedAt), formatTime(g.ExpiresAt))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&js, "json", false, "print the list as a JSON array")
	return cmd
}

func newOAuthRevokeCmd(e IO) *cobra.Command {
	return &cobra.Command{
		Use:     "revoke ID",
		Short:   "Revoke an OAuth grant; its tokens stop working at once",
		Example: "  pds oauth revoke grant-3q5...",
		Args:    oneArg("give the id of one grant (see pds oauth list)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			client, err := newAdminClient(cmd, e)
			if err != nil {
				return err
			}
			if err := client.call(cmd.Context(), "app.stratus.admin.revokeOAuthGrant", map[string]string{"id": args[0]}, nil); err != nil {
				return err
			}
			fmt.Fprintf(e.Stdout, "Revoked OAuth grant %s.\n", args[0])
			return nil
		},
	}
}
