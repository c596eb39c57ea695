package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

func newHandleCmd(e IO) *cobra.Command {
	return newGroupCmd("handle",
		"Change the account's handle",
		`handle changes the hosted account's handle on the running server, as
com.atproto.identity.updateHandle does: a handle under one of the server's
user-domains is served by the server itself; any other must already resolve
to the account's DID (DNS TXT record _atproto.<handle> with "did=<DID>", or
https://<handle>/.well-known/atproto-did). For a did:plc account the server
signs and submits the PLC operation with its rotation key; for did:web the
DID document it serves changes at once. Relays and AppViews are told with
an #identity event.`,
		`  pds handle set alice.example.com
  pds handle set alice.example.com --server https://pds.example.com --admin-token "$TOKEN"`,
		newHandleSetCmd(e))
}

func newHandleSetCmd(e IO) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "set HANDLE",
		Short: "Set the account's handle",
		Args:  oneArg("set takes exactly one argument: the new handle"),
		RunE: func(cmd *cobra.Command, args []string) error {
			client, err := newAdminClient(cmd, e)
			if err != nil {
				return err
			}
			h := strings.TrimPrefix(strings.TrimSpace(args[0]), "@")
			if err := client.call(cmd.Context(), "com.atproto.identity.updateHandle", map[string]string{"handle": h}, nil); err != nil {
				return err
			}
			fmt.Fprintf(e.Stdout, "Handle set to %s.\n", strings.ToLower(h))
			return nil
		},
	}
	addClientFlags(cmd)
	return cmd
}

func newIdentityCmd(e IO) *cobra.Command {
	return newGroupCmd("identity",
		"Identity operations that need the operator",
		`identity plc-token prints the token of the latest
com.atproto.identity.requestPlcOperationSignature call. Other servers send
it by email; this one has no mail, so the token goes to the operator, who
passes it to the migration tool that asked. It is valid for 15 minutes and
for one signature, and it is never written to the logs.`,
		`  pds identity plc-token`,
		newPLCTokenCmd(e))
}

func newPLCTokenCmd(e IO) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "plc-token",
		Short: "Print the pending PLC operation token",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			client, err := newAdminClient(cmd, e)
			if err != nil {
				return err
			}
			var out struct {
				Token     string `json:"token"`
				ExpiresAt string `json:"expiresAt"`
			}
			if err := client.call(cmd.Context(), "app.stratus.admin.getPlcOperationToken", nil, &out); err != nil {
				return err
			}
			fmt.Fprintf(e.Stdout, "%s\n", out.Token)
			fmt.Fprintf(e.Stderr, "Valid until %s, for one signature.\n", out.ExpiresAt)
			return nil
		},
	}
	addClientFlags(cmd)
	return cmd
}
