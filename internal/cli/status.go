package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"stratus/internal/config"
	"stratus/internal/server"
	"stratus/internal/status"
)

func newStatusCmd(e IO) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the server's state: account, storage, firehose, sessions, crawlers, identity",
		Long: `Show the state of the server: the account and its repository, storage,
the firehose, sessions, crawlers and whether the DID document names the
signing key.

The running server is asked over HTTP with the admin token (--server,
--admin-token). When no server answers at the local address, the data
directory is read directly and the report says it is offline.

Exit status 1 when the report names a problem (for example a DID document
that names another key, or storage that cannot be read); a deactivated
account is reported but is not a problem.`,
		Example: `  pds status
  pds status --json | jq .firehose
  pds status --server https://pds.example.com --admin-token "$TOKEN"`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			src, err := openStatusSource(cmd, e)
			if err != nil {
				return err
			}
			defer src.Close()
			r, err := src.Fetch(cmd.Context())
			if err != nil {
				return err
			}
			return printStatus(e, r, asJSON)
		},
	}
	addClientFlags(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as one JSON object")
	return cmd
}

// printStatus prints a report and turns its problems into the exit status.
func printStatus(e IO, r *status.Report, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(e.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(r); err != nil {
			return err
		}
	} else if err := status.WriteText(e.Stdout, r, time.Now()); err != nil {
		return err
	}
	if n := len(r.Problems); n > 0 {
		return fmt.Errorf("%d problem(s) need attention", n)
	}
	return nil
}

// statusSource produces status reports: from the running server over
// HTTP, or, when no server answers at the local address, from the data
// directory opened in this process.
type statusSource struct {
	client *adminClient
	first  *status.Report // the report fetched to see that the server answers
	srv    *server.Server
	// failed is the report of a data directory that cannot be opened.
	failed *status.Report
}

// openStatusSource finds where reports come from. With --server (or
// PDS_SERVER) only that server is asked.
func openStatusSource(cmd *cobra.Command, e IO) (*statusSource, error) {
	explicit, _ := cmd.Flags().GetString("server")
	if explicit == "" {
		explicit = e.Getenv("PDS_SERVER")
	}
	client, err := newAdminClient(cmd, e)
	switch {
	case err == nil:
		src := &statusSource{client: client}
		r, err := src.Fetch(cmd.Context())
		if err == nil {
			src.first = r
			return src, nil
		}
		if explicit != "" || !strings.HasPrefix(err.Error(), "cannot reach the PDS") {
			return nil, err
		}
	case explicit != "":
		return nil, err
	}
	return openOffline(cmd, e)
}

// openOffline opens the data directory as the server would, without
// serving it. A directory that cannot be opened yields a report that says
// why, so `pds status` still prints something and exits 1.
func openOffline(cmd *cobra.Command, e IO) (*statusSource, error) {
	c, err := loadConfig(cmd, e)
	if err != nil {
		return nil, err
	}
	if !config.Exists(c.DataDir) {
		return nil, fmt.Errorf("no server answers and %s is not a data directory (pds init creates one)", c.DataDir)
	}
	if _, err := os.Stat(filepath.Join(c.DataDir, config.DatabaseFile)); errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("no server answers and %s has no database yet: the server creates it when it first starts (pds serve)", c.DataDir)
	}
	srv, err := server.Open(cmd.Context(), c, newLogger(e, "error"))
	if err != nil {
		return &statusSource{failed: &status.Report{
			Version: server.Version, Offline: true, Time: time.Now().UTC(), PublicURL: c.PublicURL, Hostname: c.Hostname,
			Account:  status.Account{DID: c.DID, Handle: c.Handle},
			Problems: []string{fmt.Sprintf("storage: cannot open the data directory %s: %v", c.DataDir, err)},
			Warnings: []string{}, Crawlers: []status.Crawler{}, RecentEvents: []status.Event{},
		}}, nil
	}
	return &statusSource{srv: srv}, nil
}

// Fetch returns a fresh report.
func (s *statusSource) Fetch(ctx context.Context) (*status.Report, error) {
	switch {
	case s.first != nil:
		r := s.first
		s.first = nil
		return r, nil
	case s.failed != nil:
		return s.failed, nil
	case s.srv != nil:
		r, err := s.srv.Status(ctx)
		if err != nil {
			return nil, err
		}
		r.Offline = true
		return r, nil
	}
	var r status.Report
	if err := s.client.call(ctx, "app.stratus.admin.getStatus", nil, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// Close closes a data directory opened offline.
func (s *statusSource) Close() {
	if s.srv != nil {
		s.srv.Close()
	}
}
