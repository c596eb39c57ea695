package cli

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/spf13/cobra"

	"stratus/internal/config"
	"stratus/internal/integrity"
	"stratus/internal/server"
	"stratus/internal/sqlite"
)

func newCheckCmd(e IO) *cobra.Command {
	var repair bool
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Verify the database, the signed repository and the firehose log",
		Long: `check verifies the data directory: SQLite's integrity_check, the latest
commit's signature against the account's signing key, the Merkle Search
Tree rebuilt from the record index against the commit's data root, every
record block (present, hashing to its CID, decoding), stray blocks, the
firehose log and sequence counter, the credential tables, and the blobs:
the blob reference index against the blobs the records reference, and
every referenced blob present in the blob store with its size and hash.
It prints a report and exits with status 1 if anything is wrong.

It reads one consistent snapshot, so it can run while the server is
serving. --repair (with the server stopped) rebuilds what can be derived
without touching signed data: the record index and missing blocks from the
retained firehose log, accepted only if the rebuilt tree has the signed
root; stray blocks; refresh tokens left by an interrupted revocation; the
blob reference index from the records. A missing blob file cannot be
derived: it is named, to be restored from a backup.`,
		Example: `  pds check --data-dir /var/lib/pds
  pds check --repair`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := loadConfig(cmd, e)
			if err != nil {
				return err
			}
			keys := signingKeys(c)
			path := filepath.Join(c.DataDir, config.DatabaseFile)
			var blobs integrity.BlobStore
			if store, err := server.OpenBlobStore(c); err != nil {
				fmt.Fprintf(e.Stdout, "blobs: the blob store cannot be opened (%v); checking the blob index only\n", err)
			} else {
				blobs = store
			}
			if repair {
				if client, err := newAdminClient(cmd, e); err == nil {
					if _, err := remoteStatus(cmd, client, c.DID); err == nil || !strings.HasPrefix(err.Error(), "cannot reach the PDS") {
						return fmt.Errorf("a server is running on %s: stop it before pds check --repair", c.DataDir)
					}
				}
				in, err := sqlite.Inspect(cmd.Context(), path, true)
				if err != nil {
					return fmt.Errorf("database: %w", err)
				}
				rep, err := integrity.Repair(cmd.Context(), in, keys, blobs)
				if err != nil {
					in.Close()
					return fmt.Errorf("repair: %w", err)
				}
				if err := in.Commit(); err != nil {
					return fmt.Errorf("repair: %w", err)
				}
				for _, r := range rep.Repaired {
					fmt.Fprintf(e.Stdout, "repaired: %s\n", r)
				}
				if len(rep.Repaired) == 0 {
					fmt.Fprintln(e.Stdout, "repair: nothing that can be derived needed fixing")
				}
			}
			in, err := sqlite.Inspect(cmd.Context(), path, false)
			if err != nil {
				fmt.Fprintf(e.Stdout, "database: cannot be opened: %v\n", err)
				return fmt.Errorf("the database cannot be read: restore it from a backup")
			}
			defer in.Close()
			rep, err := integrity.Check(cmd.Context(), in, keys, blobs)
			if err == nil && blobs == nil {
				rep.Problems = append(rep.Problems, integrity.Problem{Where: "blobs", Message: "the blob store could not be opened, so no blob bytes were checked"})
			}
			if err != nil {
				return err
			}
			rep.Write(e.Stdout)
			if !rep.OK() {
				return fmt.Errorf("%d problem(s) found", len(rep.Problems))
			}
			return nil
		},
	}
	addClientFlags(cmd)
	cmd.Flags().BoolVar(&repair, "repair", false, "rebuild what can be derived (stop the server first)")
	return cmd
}

// signingKeys verifies commits of the configured account with the public
// half of its configured signing key.
func signingKeys(c *config.Config) integrity.KeyFunc {
	return func(did string) (atcrypto.PublicKey, error) {
		if did != c.DID {
			return nil, fmt.Errorf("the configuration holds no key for %s", did)
		}
		k, err := c.SigningKeyParsed()
		if err != nil {
			return nil, fmt.Errorf("signing key in %s: %w", config.SecretsFile, err)
		}
		return k.PublicKey()
	}
}
