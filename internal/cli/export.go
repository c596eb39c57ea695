package cli

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/spf13/cobra"

	"stratus/internal/server"
)

func newExportCmd(e IO) *cobra.Command {
	var carPath string
	cmd := &cobra.Command{
		Use:   "export --car FILE",
		Short: "Write the repository as a CAR file (the bytes getRepo serves)",
		Long: `export writes the account's repository as a CARv1 file: the signed commit,
the Merkle Search Tree and every record, exactly the bytes
com.atproto.sync.getRepo serves. It reads the data directory directly, so it
works with or without a running server, and for a deactivated account too.
The file is written with mode 0600 and replaced only once complete.`,
		Example: `  pds export --car alice-$(date +%F).car`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if carPath == "" {
				return usageError{"--car FILE is required"}
			}
			c, err := loadConfig(cmd, e)
			if err != nil {
				return err
			}
			srv, err := server.Open(cmd.Context(), c, newLogger(e, "warn"))
			if err != nil {
				return err
			}
			defer srv.Close()
			tmp, err := os.CreateTemp(filepath.Dir(carPath), "."+filepath.Base(carPath)+".*")
			if err != nil {
				return err
			}
			defer os.Remove(tmp.Name())
			w := bufio.NewWriter(tmp)
			if err := srv.Repos().ExportCAR(cmd.Context(), syntax.DID(c.DID), "", w); err != nil {
				tmp.Close()
				return fmt.Errorf("export: %w", err)
			}
			if err := w.Flush(); err != nil {
				tmp.Close()
				return err
			}
			if err := tmp.Sync(); err != nil {
				tmp.Close()
				return err
			}
			st, _ := tmp.Stat()
			if err := tmp.Close(); err != nil {
				return err
			}
			if err := os.Rename(tmp.Name(), carPath); err != nil {
				return err
			}
			fmt.Fprintf(e.Stdout, "wrote %s: the repository of %s, %d bytes\n", carPath, c.DID, st.Size())
			return nil
		},
	}
	cmd.Flags().StringVar(&carPath, "car", "", "file to write the repository CAR to")
	return cmd
}
