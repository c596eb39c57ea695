package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/spf13/cobra"

	"stratus/internal/backup"
	"stratus/internal/config"
	"stratus/internal/server"
	"stratus/internal/sqlite"
)

func newBackupCmd(e IO) *cobra.Command {
	var noBlobs bool
	cmd := &cobra.Command{
		Use:   "backup DEST",
		Short: "Take a consistent backup of the data directory while the server runs",
		Long: `backup writes a consistent snapshot of the database (SQLite VACUUM INTO,
which reads one transaction while the server keeps writing), settings.json,
secrets.json (mode 0600), the blobs the snapshot lists (blobs/<did>/<cid>,
read from the configured blob store, disk or S3, and each checked against
its CID) and a manifest into DEST: a new or empty directory, or a file
ending in .tar.gz (written with mode 0600). Blob collection is held off
while the backup runs, so no blob the snapshot lists is deleted under it.
The backup is checked like pds check before it is declared good.

--no-blobs leaves the blob bytes out, for an S3 bucket that is protected by
its own versioning or replication.

The backup holds the secrets, so store it as carefully as the server.`,
		Example: `  pds backup /srv/backups/pds-$(date +%F).tar.gz
  pds backup ./backup-dir`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := loadConfig(cmd, e)
			if err != nil {
				return err
			}
			if !config.Exists(c.DataDir) {
				return fmt.Errorf("%s is not a data directory (no %s)", c.DataDir, config.SettingsFile)
			}
			o := backup.Options{Version: server.Version, Keys: signingKeys(c)}
			if !noBlobs {
				if o.Blobs, err = server.OpenBlobStore(c); err != nil {
					return fmt.Errorf("backup: blob store: %w", err)
				}
			}
			m, err := backup.Create(cmd.Context(), c.DataDir, args[0], o)
			if err != nil {
				return fmt.Errorf("backup: %w", err)
			}
			fmt.Fprintf(e.Stdout, "backed up %s to %s\n", c.DataDir, args[0])
			printManifest(e, m)
			return nil
		},
	}
	cmd.Flags().BoolVar(&noBlobs, "no-blobs", false, "leave the blob bytes out (their store is backed up by other means)")
	return cmd
}

func printManifest(e IO, m *backup.Manifest) {
	dids := make([]string, 0, len(m.Repos))
	for did := range m.Repos {
		dids = append(dids, did)
	}
	sort.Strings(dids)
	for _, did := range dids {
		r := m.Repos[did]
		fmt.Fprintf(e.Stdout, "  %s at rev %s (commit %s)\n", did, r.Rev, r.Commit)
	}
	fmt.Fprintf(e.Stdout, "  firehose seq %d\n", m.Seq)
	switch {
	case m.BlobsOmitted:
		fmt.Fprintf(e.Stdout, "  %d blobs recorded, their bytes left out (--no-blobs)\n", m.Blobs)
	default:
		fmt.Fprintf(e.Stdout, "  %d blobs, %d bytes\n", m.Blobs, m.BlobBytes)
	}
	for _, k := range m.Dropped {
		fmt.Fprintf(e.Stdout, "  left out blob %s: referenced by no record, collected while the backup ran\n", k)
	}
}

// DefaultSeqMargin is how far past the backup's firehose seq a restore
// moves the counter: more events than the lost server can have sent after
// the backup, so that no subscriber ever sees a seq reused.
const DefaultSeqMargin = 1_000_000

func newRestoreCmd(e IO) *cobra.Command {
	var margin, floor int64
	cmd := &cobra.Command{
		Use:   "restore SRC",
		Short: "Restore a backup into an empty data directory",
		Long: `restore unpacks a backup made by pds backup (a directory or .tar.gz) into
the data directory, which must not exist or be empty, puts its blobs into
the configured blob store (blobs/ in the data directory, or the S3 bucket
that the restored settings and the environment name), each checked against
its CID, and checks the whole, blob bytes included.

Subscribers of the old server may have seen firehose seqs beyond the
backup's, so the sequence counter is moved past them: to the backup's seq
plus --seq-margin (default 1,000,000), or to --seq-floor if that is higher
(for example the cursor a relay reports). The repository is then re-signed
with a fresh rev and #identity, #account and #sync events announce it, so
relays take the restored state instead of ignoring an older rev.

To restore from a Litestream replica, restore the database file with
litestream into an empty directory, put your settings.json and secrets.json
beside it, and run pds restore on that directory.`,
		Example: `  pds restore /srv/backups/pds-2026-01-01.tar.gz --data-dir /var/lib/pds`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if margin < 0 || floor < 0 {
				return usageError{"--seq-margin and --seq-floor must not be negative"}
			}
			dir := dataDir(cmd, e)
			src := args[0]
			if abs, err := filepath.Abs(src); err == nil {
				if d, err := filepath.Abs(dir); err == nil && abs == d {
					return usageError{"restore SRC must not be the data directory itself"}
				}
			}
			if err := backup.Unpack(src, dir); err != nil {
				return fmt.Errorf("restore: %w", err)
			}
			undo := func() {
				entries, _ := os.ReadDir(dir)
				for _, en := range entries {
					os.RemoveAll(filepath.Join(dir, en.Name()))
				}
			}
			c, err := loadConfig(cmd, e)
			if err != nil {
				undo()
				return err
			}
			store, err := server.OpenBlobStore(c)
			if err != nil {
				undo()
				return fmt.Errorf("restore: blob store: %w", err)
			}
			if c.BlobStore == "s3" {
				n, err := backup.MoveBlobs(cmd.Context(), filepath.Join(dir, config.BlobsDir), store)
				if err != nil {
					undo()
					return fmt.Errorf("restore: %w", err)
				}
				fmt.Fprintf(e.Stdout, "put %d blobs into the S3 bucket %s\n", n, c.BlobS3Bucket)
			}
			m, err := backup.Verify(cmd.Context(), dir, signingKeys(c), store)
			if err != nil {
				undo()
				return fmt.Errorf("restore: %w", err)
			}
			target := m.Seq + margin
			if floor > target {
				target = floor
			}
			db, err := sqlite.Open(cmd.Context(), filepath.Join(dir, config.DatabaseFile))
			if err != nil {
				undo()
				return err
			}
			seq, err := db.RaiseSeqFloor(cmd.Context(), target)
			db.Close()
			if err != nil {
				undo()
				return err
			}
			srv, err := server.Open(cmd.Context(), c, newLogger(e, "warn"))
			if err != nil {
				undo()
				return err
			}
			head, err := srv.Recommit(cmd.Context())
			srv.Close()
			if err != nil {
				undo()
				return fmt.Errorf("re-sign the restored repository: %w", err)
			}
			fmt.Fprintf(e.Stdout, "restored %s into %s\n", src, dir)
			printManifest(e, m)
			fmt.Fprintf(e.Stdout, "firehose seq moved to %d; %s re-signed at rev %s (commit %s) with #identity, #account and #sync\n",
				seq, syntax.DID(c.DID), head.Rev, head.Commit)
			fmt.Fprintln(e.Stdout, "start the server with pds serve; relays that crawled the old server will take the new state")
			return nil
		},
	}
	cmd.Flags().Int64Var(&margin, "seq-margin", DefaultSeqMargin, "how far past the backup's firehose seq to move the counter")
	cmd.Flags().Int64Var(&floor, "seq-floor", 0, "move the firehose counter to at least this seq")
	return cmd
}
