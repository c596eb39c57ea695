package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"charm.land/huh/v2"
	"github.com/spf13/cobra"

	"stratus/internal/auth"
)

// AppPassword is an app password as the server reports it. Password is set
// only in the answer to its creation, the one time it is shown.
type AppPassword struct {
	Name       string `json:"name"`
	Password   string `json:"password,omitempty"`
	CreatedAt  string `json:"createdAt"`
	Privileged bool   `json:"privileged"`
}

func newAppPasswordCmd(e IO) *cobra.Command {
	return newGroupCmd("app-password",
		"Create, list and revoke app passwords",
		`An app password is a named, individually revocable credential that works
like the account password for com.atproto.server.createSession. Give one to
each third-party client instead of the account password: the client never
sees the account password, and revoking one client disturbs no other.

These commands talk to the running server ("pds serve") with the admin
token. By default both come from the data directory (the server's address
from settings.json, the token from secrets.json); --server and
--admin-token (env PDS_SERVER, PDS_ADMIN_TOKEN) reach a server elsewhere.

Questions are asked only on a terminal, as an interactive form drawn on
stderr; set PDS_ACCESSIBLE=1 for plain line-by-line prompts instead (for
screen readers). Without a terminal, flags must say everything.`,
		`  pds app-password create --name my-feed-builder
  pds app-password list
  pds app-password revoke --name my-feed-builder
  pds app-password list --server https://pds.example.com --admin-token "$TOKEN"`,
		newAppPasswordCreateCmd(e), newAppPasswordListCmd(e), newAppPasswordRevokeCmd(e))
}

func newAppPasswordCreateCmd(e IO) *cobra.Command {
	var (
		name           string
		privileged, js bool
	)
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create an app password and print it once",
		Long: `create makes a new app password and prints it once, in the form
xxxx-xxxx-xxxx-xxxx. Save it then: only its hash is stored, so it cannot be
shown again, reset or recovered (create a new one instead).

Give the password, with the account's handle, to the third-party client; it
signs in with com.atproto.server.createSession exactly as it would with the
account password.

On a terminal, create asks for the name unless --name is given; without a
terminal --name is required.`,
		Example: `  pds app-password create
  pds app-password create --name my-feed-builder
  pds app-password create -n mobile-poster-bot --json
  pds app-password create -n chat-client --privileged`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			named := cmd.Flags().Changed("name")
			name = strings.TrimSpace(name) // as the server stores it
			switch {
			case named:
				if err := validAppPasswordName(name); err != nil {
					return usageError{"--name: " + err.Error()}
				}
			case !e.interactive():
				return usageError{"no terminal to ask for the name on: pass --name NAME"}
			}
			client, err := newAdminClient(cmd, e)
			if err != nil {
				return err
			}
			if !named {
				if err := runForm(cmd, e, huh.NewGroup(huh.NewInput().
					Title("Name of the new app password").
					Description("One per client, e.g. my-feed-builder; shown by \"pds app-password list\".").
					Value(&name).Validate(validAppPasswordName))); err != nil {
					return err
				}
				name = strings.TrimSpace(name)
				if err := validAppPasswordName(name); err != nil {
					// Accessible prompts end so at end of input.
					return usageError{"name: " + err.Error()}
				}
			}
			var ap AppPassword
			err = client.call(cmd.Context(), "com.atproto.server.createAppPassword",
				map[string]any{"name": name, "privileged": privileged}, &ap)
			var xe *xrpcError
			if errors.As(err, &xe) && xe.Name == "DuplicateName" {
				return fmt.Errorf("%w\nan app password named %q already exists: choose another name, or revoke the old one first", err, name)
			}
			if err != nil {
				return err
			}
			if js {
				return writeJSONOut(e, ap)
			}
			w := e.Stdout
			kind := "App password"
			if ap.Privileged {
				kind = "Privileged app password"
			}
			fmt.Fprintf(w, "%s %q created:\n\n", kind, ap.Name)
			fmt.Fprintf(w, "    %s\n\n", ap.Password)
			fmt.Fprintln(w, "Save it now: it will not be shown again.")
			fmt.Fprintln(w, "Give it, with the account's handle, to the client; it signs in with")
			fmt.Fprintf(w, "com.atproto.server.createSession. Revoke it with: pds app-password revoke --name %s\n", shellQuote(ap.Name))
			return nil
		},
	}
	cmd.Flags().StringVarP(&name, "name", "n", "", "name of the app password (asked for on a terminal when absent)")
	cmd.Flags().BoolVar(&privileged, "privileged", false, "allow access to privileged methods such as direct messages (chat.bsky.*)")
	cmd.Flags().BoolVar(&js, "json", false, "print {name, password, createdAt, privileged} as JSON")
	return cmd
}

func validAppPasswordName(s string) error {
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		return errors.New("a name is required")
	case len([]rune(s)) > auth.MaxAppPasswordName:
		return fmt.Errorf("at most %d characters", auth.MaxAppPasswordName)
	}
	return nil
}

// listAppPasswords returns the account's app passwords, newest first.
func listAppPasswords(cmd *cobra.Command, client *adminClient) ([]AppPassword, error) {
	var out struct {
		Passwords []AppPassword `json:"passwords"`
	}
	if err := client.call(cmd.Context(), "com.atproto.server.listAppPasswords", nil, &out); err != nil {
		return nil, err
	}
	for i := range out.Passwords {
		out.Passwords[i].Password = "" // never shown after creation
	}
	if out.Passwords == nil {
		out.Passwords = []AppPassword{}
	}
	return out.Passwords, nil
}

func newAppPasswordListCmd(e IO) *cobra.Command {
	var js bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List app passwords (names only: the passwords themselves are never shown again)",
		Long: `list shows the name, creation time and privileged flag of every app
password, newest first. The passwords themselves are printed only when
created.`,
		Example: `  pds app-password list
  pds app-password list --json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			client, err := newAdminClient(cmd, e)
			if err != nil {
				return err
			}
			aps, err := listAppPasswords(cmd, client)
			if err != nil {
				return err
			}
			if js {
				return writeJSONOut(e, aps)
			}
			if len(aps) == 0 {
				fmt.Fprintln(e.Stdout, "No app passwords.")
				return nil
			}
			tw := tabwriter.NewWriter(e.Stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tCREATED\tPRIVILEGED")
			for _, ap := range aps {
				priv := "no"
				if ap.Privileged {
					priv = "yes"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\n", ap.Name, formatTime(ap.CreatedAt), priv)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&js, "json", false, "print the list as a JSON array of {name, createdAt, privileged}")
	return cmd
}

func newAppPasswordRevokeCmd(e IO) *cobra.Command {
	var (
		name string
		yes  bool
	)
	cmd := &cobra.Command{
		Use:   "revoke",
		Short: "Revoke an app password and end the sessions opened with it",
		Long: `revoke deletes an app password: no new session can be created with it,
and every session opened with it ends at once (its access tokens fail on the
next request). The account password and the other app passwords keep
working.

On a terminal, revoke lets you pick the app password from the list unless
--name is given, and asks for confirmation unless -y is given. Without a
terminal both --name and -y are required.`,
		Example: `  pds app-password revoke
  pds app-password revoke --name my-feed-builder
  pds app-password revoke -n my-feed-builder -y`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			named := cmd.Flags().Changed("name")
			if !e.interactive() {
				if !named {
					return usageError{"no terminal to choose the app password on: pass --name NAME"}
				}
				if !yes {
					return usageError{fmt.Sprintf("refusing to revoke %q without confirmation; pass -y", name)}
				}
			}
			name = strings.TrimSpace(name) // as create stores it
			if named && name == "" {
				return usageError{"--name: a name is required"}
			}
			client, err := newAdminClient(cmd, e)
			if err != nil {
				return err
			}
			// The choice and the confirmation are pages of one form.
			var pages []*huh.Group
			var choices []string // the names offered, in order
			if !named {
				aps, err := listAppPasswords(cmd, client)
				if err != nil {
					return err
				}
				if len(aps) == 0 {
					fmt.Fprintln(e.Stdout, "No app passwords to revoke.")
					return nil
				}
				opts := make([]huh.Option[string], len(aps))
				for i, ap := range aps {
					choices = append(choices, ap.Name)
					label := fmt.Sprintf("%s  (created %s)", ap.Name, formatTime(ap.CreatedAt))
					if ap.Privileged {
						label += "  privileged"
					}
					opts[i] = huh.NewOption(label, ap.Name)
				}
				pages = append(pages, huh.NewGroup(huh.NewSelect[string]().
					Title("App password to revoke").Options(opts...).Value(&name)))
			}
			ok := yes
			if !yes {
				const desc = "Clients using it can no longer sign in, and their sessions end now."
				title := func() string { return fmt.Sprintf("Revoke the app password %q?", name) }
				if accessible(e) {
					// Accessible prompts do not evaluate TitleFunc, and
					// are not subject to the lost-key problem: ask in turn.
					if len(pages) > 0 {
						if err := runForm(cmd, e, pages...); err != nil {
							return err
						}
					}
					pages = []*huh.Group{huh.NewGroup(confirmField(&ok, title(), desc))}
				} else if named {
					pages = append(pages, huh.NewGroup(confirmField(&ok, title(), desc)))
				} else {
					// One confirmation page per app password, shown only
					// for the one chosen: its title is fixed, so it can
					// never name another. (huh computes a TitleFunc
					// asynchronously; on a busy machine the question
					// could name the previous choice for a moment.)
					for _, opt := range choices {
						page := huh.NewGroup(confirmField(&ok, fmt.Sprintf("Revoke the app password %q?", opt), desc))
						pages = append(pages, page.WithHideFunc(func() bool { return name != opt }))
					}
				}
			}
			if len(pages) > 0 {
				if err := runForm(cmd, e, pages...); err != nil {
					return err
				}
			}
			if !ok {
				fmt.Fprintln(e.Stdout, "Nothing revoked.")
				return nil
			}
			if name == "" { // accessible prompts end so at end of input
				return errCancelled
			}
			var out struct {
				SessionsEnded int `json:"sessionsEnded"`
			}
			if err := client.call(cmd.Context(), "com.atproto.server.revokeAppPassword", map[string]any{"name": name}, &out); err != nil {
				var xe *xrpcError
				if errors.As(err, &xe) && xe.Name == "InvalidRequest" && strings.Contains(strings.ToLower(xe.Message), "not found") {
					return fmt.Errorf("%w\nsee \"pds app-password list\" for the names", err)
				}
				return err
			}
			fmt.Fprintf(e.Stdout, "Revoked %q; ended %d active session(s).\n", name, out.SessionsEnded)
			return nil
		},
	}
	cmd.Flags().StringVarP(&name, "name", "n", "", "name of the app password (chosen from the list on a terminal when absent)")
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	return cmd
}

// formatTime shows a server timestamp in UTC to the second; anything that
// does not parse is shown as it came.
func formatTime(s string) string {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return s
	}
	return t.UTC().Format("2006-01-02 15:04:05 UTC")
}

// writeJSONOut prints v as indented JSON on stdout.
func writeJSONOut(e IO, v any) error {
	enc := json.NewEncoder(e.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// shellQuote quotes s for a shell command line when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_.@/+:", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
