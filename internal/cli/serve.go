package cli

import (
	"fmt"
	"log/slog"
	"strings"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/spf13/cobra"

	"stratus/internal/auth"
	"stratus/internal/config"
	"stratus/internal/server"
)

// DevHandle is the handle of the development account `serve --dev`
// creates.
const DevHandle = "dev.test"

func newServeCmd(e IO) *cobra.Command {
	var dev bool
	var debugAddr string
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the PDS",
		Long: `serve runs the PDS on the data directory until interrupted.

With --dev and a data directory that has not been initialised, it first
creates a local development account on http://localhost:<port> and prints
its handle and a freshly generated password once.`,
		Example: `  pds serve --dev
  pds serve --data-dir /var/lib/pds --port 2583`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir := dataDir(cmd, e)
			if debugAddr == "" {
				debugAddr = e.Getenv("PDS_DEBUG_ADDR")
			}
			if debugAddr != "" {
				if err := checkDebugAddr(debugAddr); err != nil {
					return err
				}
			}
			var devPassword string
			if dev && !config.Exists(dir) {
				var err error
				if devPassword, err = initDev(cmd, e, dir); err != nil {
					return err
				}
			}
			c, err := loadConfig(cmd, e)
			if err != nil {
				return err
			}
			log := newLogger(e, c.LogLevel)
			srv, err := server.Open(cmd.Context(), c, log)
			if err != nil {
				return err
			}
			if err := srv.Start(); err != nil {
				srv.Close()
				return err
			}
			fmt.Fprintf(e.Stdout, "Stratus %s listening on %s:%d\n", server.Version, c.Bind, srv.Port())
			fmt.Fprintf(e.Stdout, "  URL     %s\n  DID     %s\n  Handle  %s\n", c.PublicURL, c.DID, c.Handle)
			if devPassword != "" {
				fmt.Fprintf(e.Stdout, "  Password (shown once)  %s\n", devPassword)
				fmt.Fprintf(e.Stdout, "  Admin token            %s\n", c.AdminToken)
			}
			if debugAddr != "" {
				dbg, at, err := startDebug(debugAddr, log)
				if err != nil {
					srv.Close()
					return err
				}
				defer dbg.Close()
				fmt.Fprintf(e.Stdout, "  pprof debug listener on http://%s\n", at)
			}
			<-cmd.Context().Done()
			fmt.Fprintln(e.Stdout, "shutting down")
			return srv.Close()
		},
	}
	addConfigFlags(cmd, true)
	cmd.Flags().BoolVar(&dev, "dev", false, "create a local development account in an empty data directory")
	cmd.Flags().StringVar(&debugAddr, "debug-addr", "", "serve Go pprof profiles on this loopback address, e.g. 127.0.0.1:6060 (env PDS_DEBUG_ADDR; off by default)")
	return cmd
}

// initDev writes the configuration of a local development account: did:web
// on http://localhost:<port>, a random password, fresh keys.
func initDev(cmd *cobra.Command, e IO, dir string) (string, error) {
	c := config.Default(dir)
	if err := c.ApplyEnv(e.Getenv); err != nil {
		return "", err
	}
	if err := applyFlags(cmd, c); err != nil {
		return "", err
	}
	if c.Port == 0 {
		return "", usageError{"--dev needs a fixed --port, since the public URL names it"}
	}
	if c.Hostname == "" {
		c.Hostname = "localhost"
	}
	if c.PublicURL == "" {
		c.PublicURL = fmt.Sprintf("http://localhost:%d", c.Port)
	}
	if c.Handle == "" {
		c.Handle = DevHandle
	}
	if c.DID == "" {
		c.DID = config.WebDID(c.PublicURL).String()
	}
	k, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		return "", err
	}
	pub, err := k.PublicKey()
	if err != nil {
		return "", err
	}
	c.SigningKey, c.SigningKeyPublic = config.EncodeKey(k), pub.DIDKey()
	c.JWTSecret, c.AdminToken = auth.GenerateToken(), auth.GenerateToken()
	pw := auth.GeneratePassword()
	if c.PasswordHash, err = auth.HashPassword(pw); err != nil {
		return "", err
	}
	if err := c.Validate(); err != nil {
		return "", err
	}
	if err := c.Save(); err != nil {
		return "", err
	}
	fmt.Fprintf(e.Stdout, "Created a development account in %s\n", dir)
	return pw, nil
}

func newLogger(e IO, level string) *slog.Logger {
	var l slog.Level
	switch strings.ToLower(level) {
	case "debug":
		l = slog.LevelDebug
	case "warn":
		l = slog.LevelWarn
	case "error":
		l = slog.LevelError
	default:
		l = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(e.Stderr, &slog.HandlerOptions{Level: l}))
}
