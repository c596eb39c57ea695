package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"charm.land/huh/v2"
	"github.com/spf13/cobra"
)

// clientTimeout bounds every request the admin client makes.
const clientTimeout = 10 * time.Second

// adminClient calls the operator's XRPC methods of a running PDS with the
// admin token. The token is never printed, not even in error messages.
type adminClient struct {
	base  string // origin without a trailing slash, e.g. http://127.0.0.1:2583
	token string
	http  *http.Client
}

// addClientFlags registers the flags that locate the running server and
// its admin token, on a command group so that all its subcommands share
// them.
func addClientFlags(cmd *cobra.Command) {
	cmd.PersistentFlags().String("server", "", `URL of the running PDS (env PDS_SERVER; default: from the data directory's settings, e.g. http://127.0.0.1:2583)`)
	cmd.PersistentFlags().String("admin-token", "", "admin token (env PDS_ADMIN_TOKEN; default: from the data directory's secrets.json)")
}

// newAdminClient builds the client from --server / PDS_SERVER and
// --admin-token / PDS_ADMIN_TOKEN, falling back to the local data
// directory for whatever is not given.
func newAdminClient(cmd *cobra.Command, e IO) (*adminClient, error) {
	server, _ := cmd.Flags().GetString("server")
	if server == "" {
		server = e.Getenv("PDS_SERVER")
	}
	token, _ := cmd.Flags().GetString("admin-token")
	if token == "" {
		token = e.Getenv("PDS_ADMIN_TOKEN")
	}
	if server != "" {
		base, err := parseServerURL(server)
		if err != nil {
			return nil, err
		}
		server = base
	}
	if server == "" || token == "" {
		// loadConfig applies PDS_* variables and the --admin-token flag
		// over the files, so flags still win.
		c, err := loadConfig(cmd, e)
		if err != nil {
			return nil, err
		}
		if token == "" {
			token = c.AdminToken
		}
		if server == "" {
			if c.Port == 0 {
				return nil, fmt.Errorf("the settings in %s do not name a fixed port: pass --server URL (env PDS_SERVER)", c.DataDir)
			}
			host := c.Bind
			switch host {
			case "", "127.0.0.1", "0.0.0.0", "::", "[::]":
				host = "127.0.0.1"
			}
			host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
			server = "http://" + net.JoinHostPort(host, strconv.Itoa(c.Port))
		}
		if token == "" {
			return nil, fmt.Errorf("no admin token: pass --admin-token (env PDS_ADMIN_TOKEN), or run where the data directory %s is readable", c.DataDir)
		}
	}
	return &adminClient{base: server, token: token, http: &http.Client{Timeout: clientTimeout}}, nil
}

// parseServerURL checks a --server value and returns its origin.
func parseServerURL(s string) (string, error) {
	u, err := url.Parse(strings.TrimRight(strings.TrimSpace(s), "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", usageError{fmt.Sprintf("--server: %q is not an http:// or https:// URL", s)}
	}
	if u.Path != "" || u.RawQuery != "" || u.Fragment != "" {
		return "", usageError{fmt.Sprintf("--server: %q must be the server's origin (scheme://host[:port]) with nothing after it", s)}
	}
	return u.Scheme + "://" + u.Host, nil
}

// xrpcError is an error answer of the server.
type xrpcError struct {
	Status  int
	Name    string
	Message string
}

func (e *xrpcError) Error() string {
	if e.Message == "" {
		return e.Name
	}
	return e.Name + ": " + e.Message
}

// call sends one XRPC request: a POST with in as its JSON body when in is
// not nil, else a GET. A 200 answer is decoded into out (if not nil).
func (c *adminClient) call(ctx context.Context, nsid string, in, out any) error {
	ctx, cancel := context.WithTimeout(ctx, clientTimeout)
	defer cancel()
	method, endpoint := http.MethodGet, c.base+"/xrpc/"+nsid
	var body io.Reader
	if in != nil {
		method = http.MethodPost
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, endpoint, body)
	if err != nil {
		return fmt.Errorf("cannot reach the PDS at %s: %v", c.base, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.http.Do(req)
	if err != nil {
		// *url.Error repeats the method and URL; keep only the cause.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("cannot reach the PDS at %s: %v (is \"pds serve\" running?)", c.base, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("read the answer of %s: %w", c.base, err)
	}
	if resp.StatusCode == http.StatusUnauthorized {
		return fmt.Errorf("the server refused the admin token (check --admin-token, PDS_ADMIN_TOKEN or the data directory's secrets.json)")
	}
	if resp.StatusCode != http.StatusOK {
		var xe struct {
			Error   string `json:"error"`
			Message string `json:"message"`
		}
		if json.Unmarshal(b, &xe) == nil && xe.Error != "" {
			return &xrpcError{Status: resp.StatusCode, Name: xe.Error, Message: xe.Message}
		}
		return fmt.Errorf("%s answered %s to %s: is it a Stratus PDS?", c.base, resp.Status, nsid)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s answered %s with something other than the expected JSON: %v", c.base, nsid, err)
		}
	}
	return nil
}

// errCancelled is returned when the user leaves a prompt with Ctrl+C or Esc.
var errCancelled = errors.New("cancelled")

// runForm runs one prompt form on the command's terminal; each group is a
// page. Prompts are drawn on stderr, so that stdout carries only the
// command's result. With PDS_ACCESSIBLE set (or TERM=dumb), prompts are
// plain lines of text instead of a redrawn screen, for screen readers.
//
// A command runs at most one form: with the bubbletea version in use, the
// first key typed into a second form run by the same process is sometimes
// lost (the first form's input reader outlives it), so questions that
// follow each other are pages of the same form.
func runForm(cmd *cobra.Command, e IO, groups ...*huh.Group) error {
	f := huh.NewForm(groups...).WithInput(e.Stdin).WithOutput(e.Stderr).WithShowHelp(true)
	if accessible(e) {
		f = f.WithAccessible(true)
	}
	if err := f.RunWithContext(cmd.Context()); err != nil {
		if errors.Is(err, huh.ErrUserAborted) {
			return errCancelled
		}
		return fmt.Errorf("prompt: %w", err)
	}
	return nil
}

// accessible reports whether prompts are plain lines (PDS_ACCESSIBLE).
// huh also switches to them by itself when TERM=dumb.
func accessible(e IO) bool {
	v := e.Getenv("PDS_ACCESSIBLE")
	return v != "" && v != "0" && v != "false" || e.Getenv("TERM") == "dumb"
}

// confirmField is a yes/no question, answered no unless changed.
func confirmField(ok *bool, title, description string) *huh.Confirm {
	c := huh.NewConfirm().Title(title).Affirmative("Yes").Negative("No").Value(ok)
	if description != "" {
		c = c.Description(description)
	}
	return c
}

// oneArg accepts exactly one non-blank argument, answering anything else
// with a usage error (exit status 2) that says msg.
func oneArg(msg string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != 1 || strings.TrimSpace(args[0]) == "" {
			return usageError{msg}
		}
		return nil
	}
}

// noArgs is cobra.NoArgs as a usage error (exit status 2); nested commands
// are not covered by the wrapping newRoot applies to its direct children.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageError{fmt.Sprintf("unknown command or argument %q for %q", args[0], cmd.CommandPath())}
	}
	return nil
}

// newGroupCmd returns a command that only holds subcommands: run alone it
// prints its help; with an unknown subcommand it is a usage error.
func newGroupCmd(use, short, long, example string, subs ...*cobra.Command) *cobra.Command {
	cmd := &cobra.Command{
		Use:     use,
		Short:   short,
		Long:    long,
		Example: example,
		Args:    noArgs,
		RunE:    func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	addClientFlags(cmd)
	cmd.AddCommand(subs...)
	return cmd
}
