package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"charm.land/huh/v2"
	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/spf13/cobra"

	"stratus/internal/auth"
	"stratus/internal/config"
	"stratus/internal/identity"
)

type initOptions struct {
	// migrate prepares the directory for an existing DID moving here.
	migrate   bool
	didMethod string
	password  string
	yes       bool
	json      bool
}

func newInitCmd(e IO) *cobra.Command {
	var o initOptions
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Create or complete a data directory: keys, account identity, settings",
		Long: `init writes the data directory's settings.json and secrets.json (mode 0600):
a new secp256k1 signing key, a JWT secret, an admin token and the bcrypt hash
of the account password. For did:plc it also creates a rotation key, signs a
PLC genesis operation and registers it with the PLC directory.

On a terminal it asks for anything not given as a flag. With --yes (or
without a terminal) it uses flags and defaults only. Keys are printed once:
back them up. Re-running init keeps existing keys and secrets.`,
		Example: `  pds init
  pds init --data-dir /var/lib/pds --handle alice.example.com --hostname pds.example.com \
      --public-url https://pds.example.com --did-method plc --email alice@example.com --yes --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runInit(cmd, e, o) },
	}
	addConfigFlags(cmd, false)
	cmd.Flags().StringVar(&o.didMethod, "did-method", "", "web (DID document served by this server) or plc (registered with the PLC directory)")
	cmd.Flags().StringVar(&o.password, "password", "", "account password (a random one is generated and shown once if empty; env PDS_PASSWORD)")
	cmd.Flags().BoolVar(&o.migrate, "migrate", false, "prepare to receive an existing account (--did) moved from another PDS with pds migrate in: it starts deactivated and no DID is registered")
	cmd.Flags().BoolVarP(&o.yes, "yes", "y", false, "do not prompt; use flags and defaults")
	cmd.Flags().BoolVar(&o.json, "json", false, "print what was generated as one JSON object")
	return cmd
}

// initResult is what init reports; secrets appear only when generated now.
type initResult struct {
	DataDir          string `json:"dataDir"`
	DID              string `json:"did"`
	Handle           string `json:"handle"`
	PublicURL        string `json:"publicUrl"`
	AdminToken       string `json:"adminToken,omitempty"`
	SigningKey       string `json:"signingKey,omitempty"`
	SigningKeyPublic string `json:"signingKeyPublic"`
	RotationKey      string `json:"rotationKey,omitempty"`
	RotationKeyPub   string `json:"rotationKeyPublic,omitempty"`
	Password         string `json:"password,omitempty"`
	Existing         bool   `json:"existing"`
}

func runInit(cmd *cobra.Command, e IO, o initOptions) error {
	ctx := cmd.Context()
	c, err := loadConfig(cmd, e)
	if err != nil {
		return err
	}
	existing := config.Exists(c.DataDir)
	if o.password == "" {
		o.password = e.Getenv("PDS_PASSWORD")
	}
	if existing && c.DID != "" {
		if o.didMethod != "" && !strings.HasPrefix(c.DID, "did:"+o.didMethod+":") {
			return usageError{fmt.Sprintf("%s already holds the account %s; --did-method %s cannot change it", c.DataDir, c.DID, o.didMethod)}
		}
	}
	if o.password != "" && c.PasswordHash != "" {
		return usageError{"a password is already set in " + c.DataDir + "; init never replaces secrets (remove password-hash from secrets.json to set a new one)"}
	}

	if o.migrate {
		if err := prepareMigration(c, &o, existing); err != nil {
			return err
		}
	}
	interactive := !o.yes && e.interactive()
	if interactive {
		if err := promptInit(c, &o, existing); err != nil {
			return err
		}
	}
	if err := fillInitDefaults(c, &o); err != nil {
		return err
	}

	res := initResult{DataDir: c.DataDir, Existing: existing}
	if err := generateSecrets(c, &o, &res); err != nil {
		return err
	}
	signing, err := config.ParseKey(c.SigningKey)
	if err != nil {
		return fmt.Errorf("signing key: %w", err)
	}
	pub, err := signing.PublicKey()
	if err != nil {
		return fmt.Errorf("signing key: %w", err)
	}
	c.SigningKeyPublic = pub.DIDKey()

	// For did:plc the genesis operation is built and signed first, but only
	// submitted once the whole configuration validates and is saved: a DID
	// registered for a configuration that is then thrown away would be an
	// identity nobody holds the rotation key of.
	var genesis *identity.Operation
	if c.DID == "" {
		switch o.didMethod {
		case "web":
			c.DID = config.WebDID(c.PublicURL).String()
		case "plc":
			op, did, rotPub, err := plcGenesis(c, pub)
			if err != nil {
				return err
			}
			genesis = op
			c.DID = did.String()
			res.RotationKeyPub = rotPub
		}
	}
	if err := c.Validate(); err != nil {
		return err
	}
	_, statErr := os.Stat(c.DataDir)
	dirExisted := statErr == nil
	if err := c.Save(); err != nil {
		return err
	}
	if genesis != nil {
		if err := submitPLC(ctx, c, genesis); err != nil {
			// Nothing was registered: remove the files so that a retry
			// starts clean instead of keeping a DID that does not exist.
			os.Remove(filepath.Join(c.DataDir, config.SettingsFile))
			os.Remove(filepath.Join(c.DataDir, config.SecretsFile))
			if !dirExisted {
				os.Remove(c.DataDir) // only if empty
			}
			return err
		}
	}
	res.DID, res.Handle, res.PublicURL, res.SigningKeyPublic = c.DID, c.Handle, c.PublicURL, c.SigningKeyPublic
	return printInit(e, o, res)
}

// prepareMigration configures a data directory to receive an existing
// account: the DID is the one moving here, the account starts deactivated
// (its empty repository is replaced by importRepo), and for did:plc a
// rotation key of this server's is generated, which the PLC operation
// moving the identity here adds.
func prepareMigration(c *config.Config, o *initOptions, existing bool) error {
	if existing {
		return usageError{c.DataDir + " is already initialised; --migrate prepares a new data directory"}
	}
	did, err := syntax.ParseDID(c.DID)
	if err != nil {
		return usageError{"--migrate needs --did, the DID of the account moving here"}
	}
	if did.Method() != "plc" && did.Method() != "web" {
		return usageError{"--did must be a did:plc or did:web"}
	}
	o.didMethod = did.Method()
	c.InitiallyActive = false
	return nil
}

// fillInitDefaults derives what was not given: hostname and public URL from
// each other, the handle from the hostname, did:web by default.
func fillInitDefaults(c *config.Config, o *initOptions) error {
	if c.Hostname == "" && c.PublicURL != "" {
		if u, err := url.Parse(c.PublicURL); err == nil {
			c.Hostname = u.Hostname()
		}
	}
	if c.Hostname == "" {
		return usageError{"--hostname (or --public-url) is required"}
	}
	if c.PublicURL == "" {
		if c.Hostname == "localhost" {
			c.PublicURL = fmt.Sprintf("http://localhost:%d", c.Port)
		} else {
			c.PublicURL = "https://" + c.Hostname
		}
	}
	c.PublicURL = strings.TrimRight(c.PublicURL, "/")
	if c.Handle == "" {
		c.Handle = c.Hostname
		if _, err := syntax.ParseHandle(c.Handle); err != nil {
			// A bare host such as localhost is no valid handle.
			c.Handle = DevHandle
		}
	}
	if h, err := syntax.ParseHandle(c.Handle); err == nil {
		c.Handle = h.Normalize().String()
	}
	if o.didMethod == "" {
		o.didMethod = "web"
		if strings.HasPrefix(c.DID, "did:plc:") {
			o.didMethod = "plc"
		}
	}
	if o.didMethod != "web" && o.didMethod != "plc" {
		return usageError{"--did-method must be web or plc"}
	}
	if c.PLCURL == "" {
		c.PLCURL = config.DefaultPLCURL
	}
	c.PLCURL = strings.TrimRight(c.PLCURL, "/")
	if len(c.Crawlers) == 0 && publicHostname(c.Hostname) {
		c.Crawlers = []string{config.DefaultCrawler}
	}
	return nil
}

// publicHostname reports whether relays on the internet could reach a
// server by this name, i.e. it is not a local or reserved name.
func publicHostname(h string) bool {
	h = strings.ToLower(h)
	if !strings.Contains(h, ".") {
		return false
	}
	for _, tld := range []string{".test", ".local", ".localhost", ".internal", ".example", ".invalid", ".lan", ".home.arpa"} {
		if strings.HasSuffix(h, tld) {
			return false
		}
	}
	return true
}

// generateSecrets fills every missing secret, recording new ones in res so
// they are shown exactly once. Existing secrets are never replaced.
func generateSecrets(c *config.Config, o *initOptions, res *initResult) error {
	if c.SigningKey == "" {
		k, err := atcrypto.GeneratePrivateKeyK256()
		if err != nil {
			return fmt.Errorf("generate signing key: %w", err)
		}
		c.SigningKey = config.EncodeKey(k)
		res.SigningKey = c.SigningKey
	}
	if o.didMethod == "plc" && c.RotationKey == "" && (c.DID == "" || o.migrate) {
		k, err := atcrypto.GeneratePrivateKeyK256()
		if err != nil {
			return fmt.Errorf("generate rotation key: %w", err)
		}
		c.RotationKey = config.EncodeKey(k)
		res.RotationKey = c.RotationKey
	}
	if c.JWTSecret == "" {
		c.JWTSecret = auth.GenerateToken()
	}
	if c.AdminToken == "" {
		c.AdminToken = auth.GenerateToken()
		res.AdminToken = c.AdminToken
	}
	if c.PasswordHash == "" {
		pw := o.password
		if pw == "" {
			pw = auth.GeneratePassword()
			res.Password = pw
		}
		h, err := auth.HashPassword(pw)
		if err != nil {
			return usageError{"--password: " + err.Error()}
		}
		c.PasswordHash = h
	}
	return nil
}

// plcGenesis signs a genesis operation with the rotation key; the DID is
// derived from the operation.
func plcGenesis(c *config.Config, signing atcrypto.PublicKey) (*identity.Operation, syntax.DID, string, error) {
	rot, err := config.ParseKey(c.RotationKey)
	if err != nil {
		return nil, "", "", fmt.Errorf("rotation key: %w", err)
	}
	h, err := syntax.ParseHandle(c.Handle)
	if err != nil {
		return nil, "", "", usageError{fmt.Sprintf("--handle: invalid handle %q", c.Handle)}
	}
	op, err := identity.NewGenesis(rot, nil, signing, h, c.PublicURL)
	if err != nil {
		return nil, "", "", fmt.Errorf("build plc genesis: %w", err)
	}
	did, err := op.DID()
	if err != nil {
		return nil, "", "", fmt.Errorf("derive did: %w", err)
	}
	rotPub, err := rot.PublicKey()
	if err != nil {
		return nil, "", "", err
	}
	return op, did, rotPub.DIDKey(), nil
}

// submitPLC registers the genesis operation with the PLC directory.
func submitPLC(ctx context.Context, c *config.Config, op *identity.Operation) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	client := &identity.PLCClient{URL: c.PLCURL, HTTPClient: &http.Client{Timeout: 30 * time.Second}}
	if err := client.Submit(ctx, syntax.DID(c.DID), op); err != nil {
		return fmt.Errorf("register %s with %s: %w", c.DID, c.PLCURL, err)
	}
	return nil
}

func printInit(e IO, o initOptions, res initResult) error {
	if o.json {
		enc := json.NewEncoder(e.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	w := e.Stdout
	verb := "Initialised"
	if res.Existing {
		verb = "Updated (existing keys kept)"
	}
	fmt.Fprintf(w, "%s data directory %s\n\n", verb, res.DataDir)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "  DID\t%s\n", res.DID)
	fmt.Fprintf(tw, "  Handle\t%s\n", res.Handle)
	fmt.Fprintf(tw, "  Public URL\t%s\n", res.PublicURL)
	fmt.Fprintf(tw, "  Signing key (public)\t%s\n", res.SigningKeyPublic)
	tw.Flush()
	if res.AdminToken != "" || res.SigningKey != "" || res.RotationKey != "" || res.Password != "" {
		fmt.Fprintln(w, "\nShown once. Copy these somewhere safe now:")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		if res.Password != "" {
			fmt.Fprintf(tw, "  Account password\t%s\n", res.Password)
		}
		if res.AdminToken != "" {
			fmt.Fprintf(tw, "  Admin token\t%s\n", res.AdminToken)
		}
		if res.SigningKey != "" {
			fmt.Fprintf(tw, "  Signing key\t%s\n", res.SigningKey)
		}
		if res.RotationKey != "" {
			fmt.Fprintf(tw, "  Rotation key\t%s  (%s)\n", res.RotationKey, res.RotationKeyPub)
		}
		tw.Flush()
		if res.RotationKey != "" {
			fmt.Fprintln(w, "\nWARNING: the signing key signs your repository and the rotation key controls")
			fmt.Fprintln(w, "your did:plc identity. Anyone holding them can act as you; losing the rotation")
			fmt.Fprintln(w, "key can lose the identity. Both are also in secrets.json (mode 0600): back it up.")
		} else {
			fmt.Fprintln(w, "\nWARNING: the signing key signs your repository; anyone holding it can act as")
			fmt.Fprintln(w, "you. It is also in secrets.json (mode 0600): back that file up.")
		}
	}
	fmt.Fprintf(w, "\nNext: pds serve --data-dir %s\n", res.DataDir)
	if o.migrate {
		fmt.Fprintf(w, "Then: pds migrate in --data-dir %s --from <old PDS URL> --identifier %s\n", res.DataDir, res.DID)
	}
	return nil
}

// promptInit asks for the settings not given as flags.
func promptInit(c *config.Config, o *initOptions, existing bool) error {
	hostname := c.Hostname
	if hostname == "" {
		hostname = "localhost"
	}
	handle, email, method, plcURL := c.Handle, c.Email, o.didMethod, c.PLCURL
	if method == "" {
		method = "web"
	}
	fields := []huh.Field{
		huh.NewInput().Title("Hostname").Description("DNS name clients use to reach this server").Value(&hostname).
			Validate(func(s string) error {
				if s == "" || strings.ContainsAny(s, "/: ") {
					return fmt.Errorf("a bare DNS name, like pds.example.com")
				}
				return nil
			}),
	}
	if c.DID == "" {
		fields = append(fields,
			huh.NewSelect[string]().Title("Identity").Options(
				huh.NewOption("did:web (DID document served by this server)", "web"),
				huh.NewOption("did:plc (registered with the PLC directory; portable)", "plc"),
			).Value(&method))
	}
	fields = append(fields,
		huh.NewInput().Title("Handle").Description("leave empty to use the hostname").Value(&handle).
			Validate(func(s string) error {
				if s == "" {
					return nil
				}
				_, err := syntax.ParseHandle(s)
				return err
			}),
		huh.NewInput().Title("Email").Description("optional").Value(&email),
	)
	pw := ""
	if c.PasswordHash == "" && o.password == "" {
		fields = append(fields, huh.NewInput().Title("Account password").Description("leave empty to generate one").
			EchoMode(huh.EchoModePassword).Value(&pw).
			Validate(func(s string) error {
				if s != "" && len(s) < auth.MinPasswordLength {
					return fmt.Errorf("at least %d characters", auth.MinPasswordLength)
				}
				return nil
			}))
	}
	if plcURL == "" {
		plcURL = config.DefaultPLCURL
	}
	// One form with a second page shown only for did:plc: a second form
	// run after the first can lose the first key typed into it.
	plcPage := huh.NewGroup(huh.NewInput().Title("PLC directory").Value(&plcURL)).
		WithHideFunc(func() bool { return method != "plc" || c.DID != "" })
	if err := huh.NewForm(huh.NewGroup(fields...), plcPage).Run(); err != nil {
		return fmt.Errorf("prompt: %w", err)
	}
	if hostname != c.Hostname && !existing {
		c.PublicURL = ""
	}
	c.Hostname, c.Handle, c.Email, c.PLCURL, o.didMethod = hostname, handle, email, plcURL, method
	if pw != "" {
		o.password = pw
	}
	return nil
}
