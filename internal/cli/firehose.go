package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"stratus/internal/crawl"
)

func newRequestCrawlCmd(e IO) *cobra.Command {
	var relays []string
	cmd := &cobra.Command{
		Use:   "request-crawl",
		Short: "Ask relays to crawl this server (com.atproto.sync.requestCrawl)",
		Long: `request-crawl asks each relay to subscribe to this server's firehose. It
uses the relays in the "crawlers" setting unless --relay is given, and the
server's hostname from the data directory. The server also does this by
itself when it starts and after the first write that follows a quiet
period.`,
		Example: `  pds request-crawl
  pds request-crawl --relay https://bsky.network`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := loadConfig(cmd, e)
			if err != nil {
				return err
			}
			if len(relays) == 0 {
				relays = c.Crawlers
			}
			if len(relays) == 0 {
				return usageError{"no relays: set the crawlers setting or pass --relay URL"}
			}
			if c.Hostname == "" {
				return fmt.Errorf("no hostname in %s: run pds init first", c.DataDir)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), time.Minute)
			defer cancel()
			failed := 0
			for _, relay := range relays {
				r := crawl.New(c.Hostname, []string{relay}, nil, newLogger(e, "error"))
				if err := r.Request(ctx); err != nil {
					failed++
					fmt.Fprintf(e.Stderr, "%s: %v\n", relay, err)
					continue
				}
				fmt.Fprintf(e.Stdout, "%s: crawl of %s requested\n", relay, c.Hostname)
			}
			if failed > 0 {
				return fmt.Errorf("%d of %d relays refused or could not be reached", failed, len(relays))
			}
			return nil
		},
	}
	cmd.Flags().StringSliceVar(&relays, "relay", nil, "relay URL (repeatable; default: the crawlers setting)")
	return cmd
}

func newEmitIdentityCmd(e IO) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "emit-identity",
		Short: "Emit an #identity event so relays and AppViews refresh the account's identity",
		Long: `emit-identity asks the running server to put an #identity event on its
firehose. Consumers then re-resolve the account's DID document and handle:
use it after changing DNS for the handle or updating a did:plc document.`,
		Example: `  pds emit-identity
  pds emit-identity --server https://pds.example.com --admin-token "$TOKEN"`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			client, err := newAdminClient(cmd, e)
			if err != nil {
				return err
			}
			var out struct {
				Seq int64 `json:"seq"`
			}
			if err := client.call(cmd.Context(), "app.stratus.admin.emitIdentity", struct{}{}, &out); err != nil {
				return err
			}
			fmt.Fprintf(e.Stdout, "Emitted #identity (seq %d).\n", out.Seq)
			return nil
		},
	}
	addClientFlags(cmd)
	return cmd
}
