// Package config loads, overrides and validates the server's settings. A
// data directory holds two files: settings.json (public settings) and
// secrets.json (keys, token, password hash; mode 0600). Every setting can
// be overridden by an environment variable PDS_<NAME> and a flag --<name>,
// spelled the same way in all three places.
package config

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/syntax"

	"stratus/internal/ratelimit"
	"stratus/internal/safehttp"
)

// File names inside the data directory.
const (
	SettingsFile = "settings.json"
	SecretsFile  = "secrets.json"
	DatabaseFile = "pds.sqlite"
	BlobsDir     = "blobs"
)

// Defaults.
const (
	DefaultDataDir = "pds-data"
	DefaultPort    = 2583
	DefaultBind    = "127.0.0.1"
	DefaultPLCURL  = "https://plc.directory"
	// DefaultCrawler is the relay init asks to crawl public servers.
	DefaultCrawler = "https://bsky.network"
)

// Settings are the public settings, stored in settings.json.
type Settings struct {
	// Hostname is the server's DNS name; the server's own DID is
	// did:web:<hostname>.
	Hostname string `json:"hostname"`
	// PublicURL is the one origin clients use to reach the server, used
	// verbatim wherever a URL of this server appears.
	PublicURL string `json:"public-url"`
	Port      int    `json:"port"`
	Bind      string `json:"bind"`
	DID       string `json:"did"`
	Handle    string `json:"handle"`
	Email     string `json:"email"`
	PLCURL    string `json:"plc-url"`
	// InitiallyActive is the account state applied when the account is
	// first created (false to start deactivated, e.g. for a migration).
	InitiallyActive bool `json:"initially-active"`
	// SigningKeyPublic is the did:key of the signing key, kept in the public
	// file so operators can see it; it must match the private key.
	SigningKeyPublic string `json:"signing-key-public"`
	// UserDomains lists handle suffixes offered by describeServer.
	UserDomains       []string `json:"user-domains,omitempty"`
	ContactEmail      string   `json:"contact-email,omitempty"`
	PrivacyPolicyURL  string   `json:"privacy-policy-url,omitempty"`
	TermsOfServiceURL string   `json:"terms-of-service-url,omitempty"`
	LogLevel          string   `json:"log-level,omitempty"`
	// TrustedProxies are the reverse proxies (IPs or CIDRs) whose
	// X-Forwarded-For header names the client; from anyone else it is
	// ignored.
	TrustedProxies []string `json:"trusted-proxies,omitempty"`
	// FirehoseRetention is how long firehose events are kept for cursor
	// replay, as a Go duration ("72h").
	FirehoseRetention string `json:"firehose-retention"`
	// Crawlers are the relays asked to crawl this server.
	Crawlers []string `json:"crawlers,omitempty"`
	// SyncCommits fsyncs every commit before acknowledging it (the
	// default). Turned off, commits still survive a crash of the process
	// but the newest can be lost to a power failure.
	SyncCommits bool `json:"sync-commits"`
	// BlobStore is where blob bytes are kept: "disk" (the default, under
	// the data directory) or "s3" (an S3-compatible bucket).
	BlobStore       string `json:"blob-store,omitempty"`
	BlobS3Endpoint  string `json:"blob-endpoint,omitempty"`
	BlobS3Bucket    string `json:"blob-bucket,omitempty"`
	BlobS3Region    string `json:"blob-region,omitempty"`
	BlobS3AccessKey string `json:"blob-access-key-id,omitempty"`
	// BlobS3PathStyle addresses the bucket in the path rather than the
	// host name (MinIO and most self-hosted services).
	BlobS3PathStyle bool `json:"blob-path-style,omitempty"`
	// BlobMaxSize is the largest blob accepted, in bytes (0: 100 MiB).
	BlobMaxSize int64 `json:"blob-max-size,omitempty"`
	// BlobTTL is how long a blob no record references is kept, as a Go
	// duration (empty: 1h).
	BlobTTL string `json:"blob-ttl,omitempty"`
	// ImportMaxSize is the largest repository CAR importRepo accepts, in
	// bytes (0: 1 GiB).
	ImportMaxSize int64 `json:"import-max-size,omitempty"`

	// AppViewDID and AppViewURL name the AppView that methods not served
	// here are forwarded to; ChatDID and ChatURL the chat service that
	// gets chat.bsky.*.
	AppViewDID string `json:"appview-did,omitempty"`
	AppViewURL string `json:"appview-url,omitempty"`
	ChatDID    string `json:"chat-did,omitempty"`
	ChatURL    string `json:"chat-url,omitempty"`

	// MetricsAddr is the host:port of the Prometheus /metrics listener
	// (empty: off). It must be a loopback address unless
	// MetricsAllowRemote is set, and is never the public listener.
	MetricsAddr        string `json:"metrics-addr,omitempty"`
	MetricsAllowRemote bool   `json:"metrics-allow-remote,omitempty"`
}

// Secrets are the secret settings, stored in secrets.json with mode 0600.
type Secrets struct {
	// SigningKey is the hex-encoded secp256k1 key that signs commits.
	SigningKey string `json:"signing-key"`
	// RotationKey is the hex-encoded secp256k1 PLC rotation key (did:plc).
	RotationKey  string `json:"rotation-key,omitempty"`
	JWTSecret    string `json:"jwt-secret"`
	PasswordHash string `json:"password-hash"`
	AdminToken   string `json:"admin-token"`
	// RateLimitBypass, when set, exempts requests that send it in the
	// x-ratelimit-bypass header from rate limits (trusted load tests).
	RateLimitBypass string `json:"ratelimit-bypass-key,omitempty"`
	// BlobS3SecretKey is the secret access key of the S3 blob store.
	BlobS3SecretKey string `json:"blob-secret-access-key,omitempty"`
}

// Config is the complete configuration of a data directory.
type Config struct {
	DataDir string `json:"-"`
	Settings
	Secrets
	// Overridden records the settings given by an environment variable or
	// a flag ("env" or "flag"), which win over the files at every start.
	Overridden map[string]string `json:"-"`
	// OAuthFetch relaxes the guard on fetches of OAuth client metadata
	// (plain http, private addresses). It is never read from files, flags
	// or the environment: only tests set it, to serve client metadata
	// from a local test server.
	OAuthFetch safehttp.Options `json:"-"`
}

// markOverridden records where a setting came from.
func (c *Config) markOverridden(name, source string) {
	if c.Overridden == nil {
		c.Overridden = map[string]string{}
	}
	c.Overridden[name] = source
}

// Default returns a configuration with every default filled in.
func Default(dataDir string) *Config {
	return &Config{
		DataDir: dataDir,
		Settings: Settings{
			Port:              DefaultPort,
			Bind:              DefaultBind,
			PLCURL:            DefaultPLCURL,
			InitiallyActive:   true,
			LogLevel:          "info",
			SyncCommits:       true,
			FirehoseRetention: "72h",
		},
	}
}

// Field describes one setting for flags and environment variables.
type Field struct {
	Name   string // flag and file name, e.g. "public-url"
	Usage  string
	Secret bool
	get    func(*Config) string
	set    func(*Config, string) error
}

// Env returns the environment variable of the field, e.g. PDS_PUBLIC_URL.
func (f Field) Env() string {
	return "PDS_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
}

// Get returns the field's current value as text.
func (f Field) Get(c *Config) string { return f.get(c) }

// SetFlag stores a value given as a command-line flag.
func (f Field) SetFlag(c *Config, v string) error {
	if err := f.Set(c, v); err != nil {
		return err
	}
	c.markOverridden(f.Name, "flag --"+f.Name)
	return nil
}

// Set parses and stores a value.
func (f Field) Set(c *Config, v string) error {
	if err := f.set(c, v); err != nil {
		return fmt.Errorf("%s: %w", f.Name, err)
	}
	return nil
}

func str(p func(*Config) *string) (func(*Config) string, func(*Config, string) error) {
	return func(c *Config) string { return *p(c) }, func(c *Config, v string) error { *p(c) = v; return nil }
}

func field(name, usage string, secret bool, p func(*Config) *string) Field {
	g, s := str(p)
	return Field{Name: name, Usage: usage, Secret: secret, get: g, set: s}
}

// Fields lists every overridable setting. The data directory itself is
// handled separately, since it locates the files.
func Fields() []Field {
	return []Field{
		field("hostname", "DNS name of this server", false, func(c *Config) *string { return &c.Hostname }),
		field("public-url", "public origin of this server, e.g. https://pds.example.com", false, func(c *Config) *string { return &c.PublicURL }),
		{Name: "port", Usage: "TCP port to listen on",
			get: func(c *Config) string { return strconv.Itoa(c.Port) },
			set: func(c *Config, v string) error {
				p, err := strconv.Atoi(v)
				if err != nil || p < 0 || p > 65535 {
					return fmt.Errorf("invalid port %q", v)
				}
				c.Port = p
				return nil
			}},
		field("bind", "address to listen on (0.0.0.0 for all interfaces)", false, func(c *Config) *string { return &c.Bind }),
		field("did", "DID of the hosted account", false, func(c *Config) *string { return &c.DID }),
		field("handle", "handle of the hosted account", false, func(c *Config) *string { return &c.Handle }),
		field("email", "email address of the hosted account", false, func(c *Config) *string { return &c.Email }),
		field("plc-url", "PLC directory URL", false, func(c *Config) *string { return &c.PLCURL }),
		{Name: "initially-active", Usage: "whether the account starts active when first created",
			get: func(c *Config) string { return strconv.FormatBool(c.InitiallyActive) },
			set: func(c *Config, v string) error {
				b, err := strconv.ParseBool(v)
				if err != nil {
					return fmt.Errorf("invalid boolean %q", v)
				}
				c.InitiallyActive = b
				return nil
			}},
		field("signing-key-public", "did:key of the signing key", false, func(c *Config) *string { return &c.SigningKeyPublic }),
		{Name: "user-domains", Usage: "comma-separated handle domains offered to users",
			get: func(c *Config) string { return strings.Join(c.UserDomains, ",") },
			set: func(c *Config, v string) error {
				c.UserDomains = nil
				for _, d := range strings.Split(v, ",") {
					if d = strings.TrimSpace(d); d != "" {
						c.UserDomains = append(c.UserDomains, d)
					}
				}
				return nil
			}},
		field("contact-email", "operator contact email shown by describeServer", false, func(c *Config) *string { return &c.ContactEmail }),
		field("privacy-policy-url", "privacy policy link shown by describeServer", false, func(c *Config) *string { return &c.PrivacyPolicyURL }),
		field("terms-of-service-url", "terms of service link shown by describeServer", false, func(c *Config) *string { return &c.TermsOfServiceURL }),
		field("log-level", "log level: debug, info, warn or error", false, func(c *Config) *string { return &c.LogLevel }),
		{Name: "sync-commits", Usage: "fsync every commit before acknowledging it (false: faster, survives process crashes but not power loss)",
			get: func(c *Config) string { return strconv.FormatBool(c.SyncCommits) },
			set: func(c *Config, v string) error {
				b, err := strconv.ParseBool(v)
				if err != nil {
					return fmt.Errorf("invalid boolean %q", v)
				}
				c.SyncCommits = b
				return nil
			}},
		{Name: "trusted-proxies", Usage: "comma-separated IPs or CIDRs of reverse proxies whose X-Forwarded-For is believed",
			get: func(c *Config) string { return strings.Join(c.TrustedProxies, ",") },
			set: func(c *Config, v string) error {
				c.TrustedProxies = nil
				for _, p := range strings.Split(v, ",") {
					if p = strings.TrimSpace(p); p != "" {
						c.TrustedProxies = append(c.TrustedProxies, p)
					}
				}
				return nil
			}},
		field("firehose-retention", "how long firehose events are kept for replay (Go duration, e.g. 72h)", false, func(c *Config) *string { return &c.FirehoseRetention }),
		{Name: "crawlers", Usage: "comma-separated relay URLs asked to crawl this server (e.g. https://bsky.network)",
			get: func(c *Config) string { return strings.Join(c.Crawlers, ",") },
			set: func(c *Config, v string) error {
				c.Crawlers = nil
				for _, u := range strings.Split(v, ",") {
					if u = strings.TrimSpace(u); u != "" {
						c.Crawlers = append(c.Crawlers, u)
					}
				}
				return nil
			}},
		field("blob-store", "where blob bytes are kept: disk (under the data directory) or s3", false, func(c *Config) *string { return &c.BlobStore }),
		field("blob-endpoint", "S3-compatible endpoint URL, e.g. https://<account>.r2.cloudflarestorage.com (empty: AWS)", false, func(c *Config) *string { return &c.BlobS3Endpoint }),
		field("blob-bucket", "S3 bucket holding the blobs", false, func(c *Config) *string { return &c.BlobS3Bucket }),
		field("blob-region", "S3 region (auto for R2)", false, func(c *Config) *string { return &c.BlobS3Region }),
		field("blob-access-key-id", "S3 access key ID", false, func(c *Config) *string { return &c.BlobS3AccessKey }),
		{Name: "blob-path-style", Usage: "address the S3 bucket in the URL path (MinIO) instead of the host name",
			get: func(c *Config) string { return strconv.FormatBool(c.BlobS3PathStyle) },
			set: func(c *Config, v string) error {
				b, err := strconv.ParseBool(v)
				if err != nil {
					return fmt.Errorf("invalid boolean %q", v)
				}
				c.BlobS3PathStyle = b
				return nil
			}},
		{Name: "blob-max-size", Usage: "largest blob accepted, in bytes (default 104857600, 100 MiB)",
			get: func(c *Config) string { return strconv.FormatInt(c.BlobMaxSize, 10) },
			set: func(c *Config, v string) error {
				n, err := strconv.ParseInt(v, 10, 64)
				if err != nil || n < 0 {
					return fmt.Errorf("invalid size %q", v)
				}
				c.BlobMaxSize = n
				return nil
			}},
		{Name: "import-max-size", Usage: "largest repository CAR com.atproto.repo.importRepo accepts, in bytes (default 1073741824, 1 GiB)",
			get: func(c *Config) string { return strconv.FormatInt(c.ImportMaxSize, 10) },
			set: func(c *Config, v string) error {
				n, err := strconv.ParseInt(v, 10, 64)
				if err != nil || n < 0 {
					return fmt.Errorf("invalid size %q", v)
				}
				c.ImportMaxSize = n
				return nil
			}},
		field("blob-ttl", "how long a blob no record references is kept (Go duration, default 1h)", false, func(c *Config) *string { return &c.BlobTTL }),
		field("blob-secret-access-key", "S3 secret access key", true, func(c *Config) *string { return &c.BlobS3SecretKey }),
		field("appview-did", "DID of the AppView that unserved methods are forwarded to (default did:web:api.bsky.app)", false, func(c *Config) *string { return &c.AppViewDID }),
		field("appview-url", "URL of that AppView (default https://api.bsky.app)", false, func(c *Config) *string { return &c.AppViewURL }),
		field("chat-did", "DID of the chat service for chat.bsky.* (default did:web:api.bsky.chat)", false, func(c *Config) *string { return &c.ChatDID }),
		field("chat-url", "URL of that chat service (default https://api.bsky.chat)", false, func(c *Config) *string { return &c.ChatURL }),
		field("metrics-addr", "host:port of the Prometheus /metrics listener, e.g. 127.0.0.1:9090 (empty: off)", false, func(c *Config) *string { return &c.MetricsAddr }),
		{Name: "metrics-allow-remote", Usage: "allow metrics-addr to be a non-loopback address",
			get: func(c *Config) string { return strconv.FormatBool(c.MetricsAllowRemote) },
			set: func(c *Config, v string) error {
				b, err := strconv.ParseBool(v)
				if err != nil {
					return fmt.Errorf("invalid boolean %q", v)
				}
				c.MetricsAllowRemote = b
				return nil
			}},
		field("ratelimit-bypass-key", "secret that exempts requests sending it as x-ratelimit-bypass from rate limits", true, func(c *Config) *string { return &c.RateLimitBypass }),
		field("signing-key", "hex secp256k1 repository signing key", true, func(c *Config) *string { return &c.SigningKey }),
		field("rotation-key", "hex secp256k1 PLC rotation key", true, func(c *Config) *string { return &c.RotationKey }),
		field("jwt-secret", "secret that signs session tokens", true, func(c *Config) *string { return &c.JWTSecret }),
		field("password-hash", "bcrypt hash of the account password", true, func(c *Config) *string { return &c.PasswordHash }),
		field("admin-token", "operator bearer token", true, func(c *Config) *string { return &c.AdminToken }),
	}
}

// Load reads the data directory's files over the defaults. Missing files
// are not an error: the result then simply fails Validate.
func Load(dataDir string) (*Config, error) {
	c := Default(dataDir)
	if err := readJSON(filepath.Join(dataDir, SettingsFile), &c.Settings); err != nil {
		return nil, err
	}
	if err := readJSON(filepath.Join(dataDir, SecretsFile), &c.Secrets); err != nil {
		return nil, err
	}
	return c, nil
}

// Exists reports whether the data directory already holds a settings file.
func Exists(dataDir string) bool {
	_, err := os.Stat(filepath.Join(dataDir, SettingsFile))
	return err == nil
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("parse %s: %w", path, err)
	}
	return nil
}

// ApplyEnv overrides settings from PDS_* variables found by getenv.
func (c *Config) ApplyEnv(getenv func(string) string) error {
	for _, f := range Fields() {
		if v := getenv(f.Env()); v != "" {
			if err := f.Set(c, v); err != nil {
				return fmt.Errorf("%s: %w", f.Env(), err)
			}
			c.markOverridden(f.Name, "environment variable "+f.Env())
		}
	}
	return nil
}

// Save writes both files atomically (temp file, fsync, rename); the
// secrets file is created with mode 0600 and never exists with wider
// permissions, even briefly.
func (c *Config) Save() error {
	if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	if err := writeJSON(filepath.Join(c.DataDir, SettingsFile), c.Settings, 0o644); err != nil {
		return err
	}
	return writeJSON(filepath.Join(c.DataDir, SecretsFile), c.Secrets, 0o600)
}

// UpdateSecrets changes secrets.json in dataDir through fn, leaving every
// other value in the file as it is (values given by flags or environment
// variables are not written back).
func UpdateSecrets(dataDir string, fn func(*Secrets)) error {
	c, err := Load(dataDir)
	if err != nil {
		return err
	}
	fn(&c.Secrets)
	return writeJSON(filepath.Join(dataDir, SecretsFile), c.Secrets, 0o600)
}

// UpdateSettings changes settings.json in dataDir through fn, like
// UpdateSecrets.
func UpdateSettings(dataDir string, fn func(*Settings)) error {
	c, err := Load(dataDir)
	if err != nil {
		return err
	}
	fn(&c.Settings)
	return writeJSON(filepath.Join(dataDir, SettingsFile), c.Settings, 0o644)
}

func writeJSON(path string, v any, mode os.FileMode) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	b = append(b, '\n')
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// ParseKey parses a secp256k1 private key given as hex (the stored form) or
// multibase.
func ParseKey(s string) (*atcrypto.PrivateKeyK256, error) {
	s = strings.TrimSpace(s)
	if b, err := hex.DecodeString(s); err == nil {
		return atcrypto.ParsePrivateBytesK256(b)
	}
	k, err := atcrypto.ParsePrivateMultibase(s)
	if err != nil {
		return nil, fmt.Errorf("not a hex or multibase private key")
	}
	k256, ok := k.(*atcrypto.PrivateKeyK256)
	if !ok {
		return nil, fmt.Errorf("key is not secp256k1")
	}
	return k256, nil
}

// EncodeKey returns the stored (hex) form of a private key.
func EncodeKey(k *atcrypto.PrivateKeyK256) string { return hex.EncodeToString(k.Bytes()) }

// Problem is a configuration value that is missing or invalid.
type Problem struct {
	Field   string
	Message string
}

// ValidationError lists every problem found by Validate.
type ValidationError struct{ Problems []Problem }

// Error implements error, naming each offending setting with its flag and
// environment variable.
func (e *ValidationError) Error() string {
	var b strings.Builder
	b.WriteString("invalid configuration:")
	for _, p := range e.Problems {
		env := Field{Name: p.Field}.Env()
		fmt.Fprintf(&b, "\n  %s (--%s / %s): %s", p.Field, p.Field, env, p.Message)
	}
	return b.String()
}

// Validate checks every required value and returns a *ValidationError
// naming each missing or invalid one.
func (c *Config) Validate() error {
	var probs []Problem
	add := func(f, format string, args ...any) {
		probs = append(probs, Problem{Field: f, Message: fmt.Sprintf(format, args...)})
	}
	if c.Hostname == "" {
		add("hostname", "required")
	} else if strings.ContainsAny(c.Hostname, "/:@ ") {
		add("hostname", "must be a bare DNS name, got %q", c.Hostname)
	}
	if c.PublicURL == "" {
		add("public-url", "required")
	} else if err := checkOrigin(c.PublicURL); err != nil {
		add("public-url", "%v", err)
	}
	if c.PLCURL != "" {
		if err := checkOrigin(strings.TrimRight(c.PLCURL, "/")); err != nil {
			add("plc-url", "%v", err)
		}
	}
	did, err := syntax.ParseDID(c.DID)
	switch {
	case c.DID == "":
		add("did", "required")
	case err != nil:
		add("did", "invalid DID %q: %v", c.DID, err)
	case did.Method() != "web" && did.Method() != "plc":
		add("did", "method must be web or plc, got %q", did.Method())
	case did.Method() == "web" && c.PublicURL != "" && checkOrigin(c.PublicURL) == nil:
		// The DID document of a did:web account is served by this server
		// at /.well-known/did.json, so the DID must name this origin.
		if want := WebDID(c.PublicURL); did != want {
			add("did", "a did:web account hosted here must be %s (from public-url), got %s", want, did)
		}
	}
	if c.Handle == "" {
		add("handle", "required")
	} else if _, err := syntax.ParseHandle(c.Handle); err != nil {
		add("handle", "invalid handle %q: %v", c.Handle, err)
	}
	if c.Port < 0 || c.Port > 65535 {
		add("port", "must be 0-65535")
	}
	if c.SigningKey == "" {
		add("signing-key", "required")
	} else if k, err := ParseKey(c.SigningKey); err != nil {
		add("signing-key", "does not parse: %v", err)
	} else if c.SigningKeyPublic != "" {
		pub, err := k.PublicKey()
		if err != nil || pub.DIDKey() != c.SigningKeyPublic {
			add("signing-key-public", "does not match the signing key")
		}
	}
	if c.RotationKey != "" {
		if _, err := ParseKey(c.RotationKey); err != nil {
			add("rotation-key", "does not parse: %v", err)
		}
	}
	if len(c.JWTSecret) < 32 {
		add("jwt-secret", "required, at least 32 characters")
	}
	if len(c.AdminToken) < 16 {
		add("admin-token", "required, at least 16 characters")
	}
	if c.PasswordHash == "" {
		add("password-hash", "required")
	} else if !strings.HasPrefix(c.PasswordHash, "$2") {
		add("password-hash", "must be a bcrypt hash")
	}
	if _, err := ratelimit.ParsePrefixes(c.TrustedProxies); err != nil {
		add("trusted-proxies", "%v", err)
	}
	if d, err := time.ParseDuration(c.FirehoseRetention); c.FirehoseRetention != "" && (err != nil || d < time.Minute) {
		add("firehose-retention", "must be a duration of at least 1m, like 72h")
	}
	for _, u := range c.Crawlers {
		if err := checkOrigin(strings.TrimRight(u, "/")); err != nil {
			add("crawlers", "%v", err)
		}
	}
	for _, svc := range []struct{ name, did, url string }{{"appview", c.AppViewDID, c.AppViewURL}, {"chat", c.ChatDID, c.ChatURL}} {
		if (svc.did == "") != (svc.url == "") {
			add(svc.name+"-url", "%s-did and %s-url must be set together", svc.name, svc.name)
		}
		if svc.did != "" {
			if _, err := syntax.ParseDID(svc.did); err != nil {
				add(svc.name+"-did", "invalid DID %q", svc.did)
			}
		}
		if svc.url != "" {
			if err := checkOrigin(strings.TrimRight(svc.url, "/")); err != nil {
				add(svc.name+"-url", "%v", err)
			}
		}
	}
	if c.RateLimitBypass != "" && len(c.RateLimitBypass) < 16 {
		add("ratelimit-bypass-key", "must be at least 16 characters")
	}
	switch c.BlobStore {
	case "", "disk":
	case "s3":
		if c.BlobS3Bucket == "" {
			add("blob-bucket", "required when blob-store is s3")
		}
		if c.BlobS3Endpoint != "" {
			if err := checkOrigin(strings.TrimRight(c.BlobS3Endpoint, "/")); err != nil {
				add("blob-endpoint", "%v", err)
			}
		}
		if c.BlobS3AccessKey == "" || c.BlobS3SecretKey == "" {
			add("blob-access-key-id", "blob-access-key-id and blob-secret-access-key are required when blob-store is s3")
		}
	default:
		add("blob-store", "must be disk or s3, got %q", c.BlobStore)
	}
	if d, err := time.ParseDuration(c.BlobTTL); c.BlobTTL != "" && (err != nil || d < time.Minute) {
		add("blob-ttl", "must be a duration of at least 1m, like 1h")
	}
	if c.MetricsAddr != "" {
		if err := checkMetricsAddr(c.MetricsAddr, c.MetricsAllowRemote, c.Bind, c.Port); err != nil {
			add("metrics-addr", "%v", err)
		}
	}
	switch c.LogLevel {
	case "", "debug", "info", "warn", "error":
	default:
		add("log-level", "must be debug, info, warn or error")
	}
	if len(probs) > 0 {
		return &ValidationError{Problems: probs}
	}
	return nil
}

// checkMetricsAddr accepts a host:port for the metrics listener: a
// loopback host (unless allowRemote) and never the public listener's
// address, so metrics are not exposed by accident.
func checkMetricsAddr(addr string, allowRemote bool, bind string, port int) error {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("must be host:port, like 127.0.0.1:9090: %v", err)
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("invalid port %q", p)
	}
	loopback := host == "localhost"
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		loopback = true
	}
	if !loopback && !allowRemote {
		return fmt.Errorf("%q is not a loopback address; metrics may reveal activity, so set metrics-allow-remote=true to serve them beyond this machine", addr)
	}
	if n != 0 && n == port && (host == bind || host == "" || bind == "" || bind == "0.0.0.0" || bind == "::") {
		return fmt.Errorf("must not be the public listener (%s)", net.JoinHostPort(bind, strconv.Itoa(port)))
	}
	return nil
}

// checkOrigin accepts an http(s) origin with no path, query or fragment.
func checkOrigin(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("invalid URL %q: %v", s, err)
	}
	if u.Scheme != "https" && u.Scheme != "http" {
		return fmt.Errorf("URL %q must start with https:// or http://", s)
	}
	if u.Host == "" || u.Hostname() == "" {
		return fmt.Errorf("URL %q has no host", s)
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return fmt.Errorf("URL %q must be an origin (scheme://host[:port]) with nothing after it", s)
	}
	if u.Path == "/" {
		return fmt.Errorf("URL %q must not end with a slash", s)
	}
	return nil
}

// WebDID returns the did:web identifier of an origin: the host, with the
// port percent-encoded as the did:web method requires.
func WebDID(origin string) syntax.DID {
	u, err := url.Parse(origin)
	if err != nil {
		return ""
	}
	return syntax.DID("did:web:" + strings.ReplaceAll(u.Host, ":", "%3A"))
}

// SigningKeyParsed parses the configured signing key.
func (c *Config) SigningKeyParsed() (*atcrypto.PrivateKeyK256, error) { return ParseKey(c.SigningKey) }

// ServiceDID is the server's own DID: did:web:<hostname>.
func (c *Config) ServiceDID() syntax.DID { return syntax.DID("did:web:" + c.Hostname) }

// BlobTTLDuration returns how long unreferenced blobs are kept (one hour
// when unset).
func (c *Config) BlobTTLDuration() time.Duration {
	d, err := time.ParseDuration(c.BlobTTL)
	if err != nil || d <= 0 {
		return time.Hour
	}
	return d
}

// Retention returns the firehose retention (72 hours when unset).
func (c *Config) Retention() time.Duration {
	d, err := time.ParseDuration(c.FirehoseRetention)
	if err != nil || d <= 0 {
		return 72 * time.Hour
	}
	return d
}
