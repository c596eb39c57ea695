package cli

import (
	"errors"
	"fmt"

	"charm.land/huh/v2"
	"github.com/spf13/cobra"

	"stratus/internal/auth"
)

func newSecretCmd(e IO) *cobra.Command {
	return newGroupCmd("secret",
		"Rotate the running server's secrets: JWT secret, account password, admin token, signing key",
		`The secret commands replace a secret on the running server ("pds serve"),
which takes effect at once (no restart) and is saved to the server's
secrets.json.

They talk to the server with the admin token. By default both come from the
data directory (the server's address from settings.json, the token from
secrets.json); --server and --admin-token (env PDS_SERVER, PDS_ADMIN_TOKEN)
reach a server elsewhere.

Questions are asked only on a terminal, as an interactive form drawn on
stderr; set PDS_ACCESSIBLE=1 for plain line-by-line prompts instead (for
screen readers). Without a terminal, flags must say everything.`,
		`  pds secret jwt
  pds secret password --generate
  pds secret token -y
  pds secret key --server https://pds.example.com --admin-token "$TOKEN"`,
		newSecretJWTCmd(e), newSecretPasswordCmd(e), newSecretTokenCmd(e), newSecretKeyCmd(e))
}

// rotation prepares a rotation: without -y it needs a terminal to ask on
// (a usage error otherwise, found before anything else), then the client
// is set up, then the question is asked. It reports whether to go on.
func rotation(cmd *cobra.Command, e IO, yes bool, what, consequence string) (*adminClient, bool, error) {
	if !yes && !e.interactive() {
		return nil, false, usageError{fmt.Sprintf("refusing to rotate the %s without confirmation (%s); pass -y", what, consequence)}
	}
	client, err := newAdminClient(cmd, e)
	if err != nil || yes {
		return client, err == nil, err
	}
	ok := false
	if err := runForm(cmd, e, huh.NewGroup(confirmField(&ok, fmt.Sprintf("Rotate the %s?", what), consequence+"."))); err != nil {
		return nil, false, err
	}
	if !ok {
		fmt.Fprintln(e.Stdout, "Nothing changed.")
	}
	return client, ok, nil
}

func newSecretJWTCmd(e IO) *cobra.Command {
	var yes bool
	cmd := &cobra.Command{
		Use:   "jwt",
		Short: "Rotate the JWT secret: every session ends at once",
		Long: `jwt replaces the secret that signs session tokens. Every session ends at
once: all access and refresh tokens stop working and every client (including
those signed in with app passwords) must sign in again. App passwords and the
account password are unchanged. No restart is needed.

Asks for confirmation on a terminal unless -y is given; without a terminal
-y is required.`,
		Example: `  pds secret jwt
  pds secret jwt -y`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			client, ok, err := rotation(cmd, e, yes, "JWT secret", "every session will end and every client must sign in again")
			if err != nil || !ok {
				return err
			}
			var out struct {
				SessionsEnded int    `json:"sessionsEnded"`
				Warning       string `json:"warning"`
			}
			if err := client.call(cmd.Context(), "app.stratus.admin.rotateJwtSecret", struct{}{}, &out); err != nil {
				return err
			}
			fmt.Fprintf(e.Stdout, "New JWT secret in effect: %d session(s) ended. No restart needed.\n", out.SessionsEnded)
			warn(e, out.Warning)
			return nil
		},
	}
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	return cmd
}

func newSecretPasswordCmd(e IO) *cobra.Command {
	var (
		password string
		generate bool
	)
	cmd := &cobra.Command{
		Use:   "password",
		Short: "Set a new account password (given, typed, or generated)",
		Long: `password replaces the account password. On a terminal it asks for the new
password twice, without echoing it. --password sets it without asking (note
that other users of the machine may see command lines), and --generate lets
the server generate a random one, printed once. Without a terminal one of
the two flags is required.

Sessions already open and app passwords keep working; to end every session
as well, run "pds secret jwt".`,
		Example: `  pds secret password
  pds secret password --generate
  pds secret password --password "$NEW_PASSWORD"`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			given := cmd.Flags().Changed("password")
			switch {
			case given && generate:
				return usageError{"--password and --generate exclude each other"}
			case given:
				if err := validPassword(password); err != nil {
					return usageError{"--password: " + err.Error()}
				}
			case generate:
			case !e.interactive():
				return usageError{"no terminal to ask for the password on: pass --password P or --generate"}
			}
			client, err := newAdminClient(cmd, e)
			if err != nil {
				return err
			}
			if !given && !generate {
				if password, err = promptNewPassword(cmd, e); err != nil {
					return err
				}
			}
			if generate {
				password = ""
			}
			var out struct {
				Password string `json:"password"`
				Warning  string `json:"warning"`
			}
			if err := client.call(cmd.Context(), "app.stratus.admin.setPassword", map[string]string{"password": password}, &out); err != nil {
				return err
			}
			w := e.Stdout
			if generate {
				if out.Password == "" {
					return errors.New("the server set a password but did not return it; set one with --password")
				}
				fmt.Fprintf(w, "New account password:\n\n    %s\n\n", out.Password)
				fmt.Fprintln(w, "Save it now: it will not be shown again.")
			} else {
				fmt.Fprintln(w, "Account password changed.")
			}
			fmt.Fprintln(w, `Sessions already open and app passwords keep working; "pds secret jwt" ends every session.`)
			warn(e, out.Warning)
			return nil
		},
	}
	cmd.Flags().StringVar(&password, "password", "", "the new password (asked for on a terminal when absent)")
	cmd.Flags().BoolVar(&generate, "generate", false, "let the server generate a random password, printed once")
	return cmd
}

func validPassword(s string) error {
	if len(s) < auth.MinPasswordLength {
		return fmt.Errorf("at least %d characters", auth.MinPasswordLength)
	}
	if len(s) > 72 {
		return errors.New("at most 72 bytes")
	}
	return nil
}

// promptNewPassword asks for a password twice without echoing it; the
// second field insists until both match.
func promptNewPassword(cmd *cobra.Command, e IO) (string, error) {
	var first, second string
	if err := runForm(cmd, e, huh.NewGroup(
		huh.NewInput().Title("New account password").
			Description(fmt.Sprintf("At least %d characters.", auth.MinPasswordLength)).
			EchoMode(huh.EchoModePassword).Value(&first).Validate(validPassword),
		huh.NewInput().Title("Repeat the new password").
			EchoMode(huh.EchoModePassword).Value(&second).Validate(func(s string) error {
			if s != first {
				return errors.New("the passwords do not match")
			}
			return nil
		}),
	)); err != nil {
		return "", err
	}
	if err := validPassword(first); err != nil {
		// Accessible mode does not insist on valid input.
		return "", fmt.Errorf("password: %w", err)
	}
	if first != second {
		return "", errors.New("the passwords do not match; nothing changed")
	}
	return first, nil
}

func newSecretTokenCmd(e IO) *cobra.Command {
	var yes bool
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Rotate the admin token: the old one stops working at once",
		Long: `token replaces the operator's admin token and prints the new one once. The
old token stops working at once. The server saves the new token to its
secrets.json, so the commands run where that data directory is readable keep
working; scripts and environment variables (PDS_ADMIN_TOKEN) holding the
old token must be updated.

Asks for confirmation on a terminal unless -y is given; without a terminal
-y is required.`,
		Example: `  pds secret token
  pds secret token -y`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			client, ok, err := rotation(cmd, e, yes, "admin token", "the current token stops working at once")
			if err != nil || !ok {
				return err
			}
			var out struct {
				AdminToken string `json:"adminToken"`
				Warning    string `json:"warning"`
			}
			if err := client.call(cmd.Context(), "app.stratus.admin.rotateAdminToken", struct{}{}, &out); err != nil {
				return err
			}
			if out.AdminToken == "" {
				return errors.New("the server rotated the admin token but did not return the new one: read it from the server's secrets.json")
			}
			w := e.Stdout
			fmt.Fprintf(w, "New admin token:\n\n    %s\n\n", out.AdminToken)
			fmt.Fprintln(w, "Save it now: it will not be shown again. The old token no longer works.")
			fmt.Fprintln(w, "The server saved the new token to its secrets.json; update any local scripts")
			fmt.Fprintln(w, "or PDS_ADMIN_TOKEN settings that use the old one.")
			warn(e, out.Warning)
			return nil
		},
	}
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	return cmd
}

func newSecretKeyCmd(e IO) *cobra.Command {
	var yes bool
	cmd := &cobra.Command{
		Use:   "key",
		Short: "Rotate the repository signing key",
		Long: `key replaces the account's signing key. The server saves the new key to
its secrets.json, re-signs the repository with it and announces the change
with #identity and #sync events.

For a did:web account the DID document served by this server lists the new
key at once. For did:plc the PLC directory still lists the old key: the
command prints the PLC operation to sign with your rotation key and submit,
and relays will not verify new commits until that is done.

Asks for confirmation on a terminal unless -y is given; without a terminal
-y is required.`,
		Example: `  pds secret key
  pds secret key -y`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			client, ok, err := rotation(cmd, e, yes, "signing key",
				"the repository is re-signed with a new key; a did:plc identity must then be updated at the PLC directory")
			if err != nil || !ok {
				return err
			}
			var out struct {
				DID              string   `json:"did"`
				SigningKeyPublic string   `json:"signingKeyPublic"`
				DIDMethod        string   `json:"didMethod"`
				FollowUp         []string `json:"followUp"`
				Warning          string   `json:"warning"`
			}
			if err := client.call(cmd.Context(), "app.stratus.admin.rotateSigningKey", struct{}{}, &out); err != nil {
				return err
			}
			w := e.Stdout
			fmt.Fprintf(w, "New signing key of %s:\n\n    %s\n\n", out.DID, out.SigningKeyPublic)
			fmt.Fprintln(w, "The repository was re-signed with it, and the server saved it to its secrets.json.")
			switch {
			case len(out.FollowUp) > 0:
				fmt.Fprintln(w)
				for _, l := range out.FollowUp {
					fmt.Fprintln(w, l)
				}
			case out.DIDMethod == "web":
				fmt.Fprintln(w, "The DID document (did:web, served by this server) already lists the new key.")
			}
			warn(e, out.Warning)
			return nil
		},
	}
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	return cmd
}

// warn prints the server's warning about a rotated secret that a flag or
// environment variable would override at the next start.
func warn(e IO, msg string) {
	if msg != "" {
		fmt.Fprintln(e.Stderr, "Warning:", msg)
	}
}
