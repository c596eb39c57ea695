package config_test

import (
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"golang.org/x/crypto/bcrypt"

	"stratus/internal/config"
)

// newKey returns a fresh secp256k1 key and its did:key.
func newKey(t *testing.T) (*atcrypto.PrivateKeyK256, string) {
	t.Helper()
	k, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := k.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return k, pub.DIDKey()
}

// validConfig returns a configuration that passes Validate.
func validConfig(t *testing.T) *config.Config {
	t.Helper()
	k, pub := newKey(t)
	rot, _ := newKey(t)
	hash, err := bcrypt.GenerateFromPassword([]byte("correct horse battery"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	c := config.Default(t.TempDir())
	c.Hostname = "pds.test"
	c.PublicURL = "https://pds.test"
	c.DID = "did:web:pds.test"
	c.Handle = "alice.test"
	c.Email = "a@b.c"
	c.SigningKeyPublic = pub
	c.SigningKey = config.EncodeKey(k)
	c.RotationKey = config.EncodeKey(rot)
	c.JWTSecret = strings.Repeat("j", 32)
	c.AdminToken = strings.Repeat("a", 16)
	c.PasswordHash = string(hash)
	return c
}

// envName spells a field's environment variable independently of the code
// under test.
func envName(field string) string {
	return "PDS_" + strings.ToUpper(strings.ReplaceAll(field, "-", "_"))
}

func TestValidate(t *testing.T) {
	_, otherPub := newKey(t)
	p256, err := atcrypto.GeneratePrivateKeyP256()
	if err != nil {
		t.Fatal(err)
	}
	p256Pub, err := p256.PublicKey()
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name   string
		mutate func(c *config.Config)
		want   []string // fields named, in order; nil means valid
	}{
		{"valid did:web", func(c *config.Config) {}, nil},
		{"valid did:plc", func(c *config.Config) { c.DID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz" }, nil},
		{"valid without optional values", func(c *config.Config) {
			c.Email, c.RotationKey, c.SigningKeyPublic, c.LogLevel, c.PLCURL = "", "", "", "", ""
		}, nil},
		{"valid localhost with port", func(c *config.Config) {
			c.Hostname, c.PublicURL, c.DID = "localhost", "http://localhost:2583", "did:web:localhost%3A2583"
		}, nil},
		{"valid port 0", func(c *config.Config) { c.Port = 0 }, nil},
		{"valid plc-url with trailing slash", func(c *config.Config) { c.PLCURL = "https://plc.directory/" }, nil},

		{"missing hostname", func(c *config.Config) { c.Hostname = "" }, []string{"hostname"}},
		{"hostname with scheme", func(c *config.Config) { c.Hostname = "https://pds.test" }, []string{"hostname"}},
		{"hostname with port", func(c *config.Config) { c.Hostname = "pds.test:443" }, []string{"hostname"}},
		{"missing public-url", func(c *config.Config) { c.PublicURL = "" }, []string{"public-url"}},
		{"public-url with path", func(c *config.Config) { c.PublicURL = "https://pds.test/pds" }, []string{"public-url"}},
		{"public-url with trailing slash", func(c *config.Config) { c.PublicURL = "https://pds.test/" }, []string{"public-url"}},
		{"public-url with query", func(c *config.Config) { c.PublicURL = "https://pds.test?x=1" }, []string{"public-url"}},
		{"public-url with user", func(c *config.Config) { c.PublicURL = "https://u@pds.test" }, []string{"public-url"}},
		{"public-url ftp scheme", func(c *config.Config) { c.PublicURL = "ftp://pds.test" }, []string{"public-url"}},
		{"public-url without scheme", func(c *config.Config) { c.PublicURL = "pds.test" }, []string{"public-url"}},
		{"public-url no host", func(c *config.Config) { c.PublicURL = "https://" }, []string{"public-url"}},
		{"public-url port only", func(c *config.Config) { c.PublicURL = "https://:443" }, []string{"public-url"}},
		{"bad plc-url", func(c *config.Config) { c.PLCURL = "ftp://plc.test" }, []string{"plc-url"}},
		{"missing did", func(c *config.Config) { c.DID = "" }, []string{"did"}},
		{"bad did syntax", func(c *config.Config) { c.DID = "did:web" }, []string{"did"}},
		{"not a did", func(c *config.Config) { c.DID = "pds.test" }, []string{"did"}},
		{"did:key method", func(c *config.Config) { c.DID = otherPub }, []string{"did"}},
		{"did:web not matching public-url", func(c *config.Config) { c.DID = "did:web:other.test" }, []string{"did"}},
		{"did:web without encoded port", func(c *config.Config) {
			c.Hostname, c.PublicURL, c.DID = "localhost", "http://localhost:2583", "did:web:localhost"
		}, []string{"did"}},
		{"did:web with raw colon port", func(c *config.Config) {
			c.Hostname, c.PublicURL, c.DID = "localhost", "http://localhost:2583", "did:web:localhost:2583"
		}, []string{"did"}},
		{"did:web with wrong port", func(c *config.Config) {
			c.Hostname, c.PublicURL, c.DID = "localhost", "http://localhost:2583", "did:web:localhost%3A2584"
		}, []string{"did"}},
		{"did:web port where public-url has none", func(c *config.Config) { c.DID = "did:web:pds.test%3A443" }, []string{"did"}},
		{"missing handle", func(c *config.Config) { c.Handle = "" }, []string{"handle"}},
		{"handle without dot", func(c *config.Config) { c.Handle = "alice" }, []string{"handle"}},
		{"handle with space", func(c *config.Config) { c.Handle = "alice smith.test" }, []string{"handle"}},
		{"handle with at sign", func(c *config.Config) { c.Handle = "@alice.test" }, []string{"handle"}},
		{"port too big", func(c *config.Config) { c.Port = 65536 }, []string{"port"}},
		{"negative port", func(c *config.Config) { c.Port = -1 }, []string{"port"}},
		{"missing signing key", func(c *config.Config) { c.SigningKey = "" }, []string{"signing-key"}},
		{"bad signing key", func(c *config.Config) { c.SigningKey = "not-a-key" }, []string{"signing-key"}},
		{"short hex signing key", func(c *config.Config) { c.SigningKey = "abcd" }, []string{"signing-key"}},
		{"p256 signing key", func(c *config.Config) { c.SigningKey = p256.Multibase(); c.SigningKeyPublic = "" }, []string{"signing-key"}},
		{"signing-key-public of another key", func(c *config.Config) { c.SigningKeyPublic = otherPub }, []string{"signing-key-public"}},
		{"signing-key-public of a p256 key", func(c *config.Config) { c.SigningKeyPublic = p256Pub.DIDKey() }, []string{"signing-key-public"}},
		{"bad rotation key", func(c *config.Config) { c.RotationKey = "zzz" }, []string{"rotation-key"}},
		{"missing jwt-secret", func(c *config.Config) { c.JWTSecret = "" }, []string{"jwt-secret"}},
		{"short jwt-secret", func(c *config.Config) { c.JWTSecret = strings.Repeat("j", 31) }, []string{"jwt-secret"}},
		{"missing admin-token", func(c *config.Config) { c.AdminToken = "" }, []string{"admin-token"}},
		{"short admin-token", func(c *config.Config) { c.AdminToken = strings.Repeat("a", 15) }, []string{"admin-token"}},
		{"missing password-hash", func(c *config.Config) { c.PasswordHash = "" }, []string{"password-hash"}},
		{"plaintext password-hash", func(c *config.Config) { c.PasswordHash = "correct horse battery" }, []string{"password-hash"}},
		{"sha256 password-hash", func(c *config.Config) { c.PasswordHash = "$5$rounds=5000$abc$def" }, []string{"password-hash"}},
		{"bad log-level", func(c *config.Config) { c.LogLevel = "verbose" }, []string{"log-level"}},
		{"multiple problems", func(c *config.Config) {
			c.Hostname = ""
			c.PublicURL = "https://pds.test/"
			c.Handle = "alice"
			c.SigningKey = "garbage"
			c.JWTSecret = "short"
			c.AdminToken = ""
			c.LogLevel = "loud"
		}, []string{"hostname", "public-url", "handle", "signing-key", "jwt-secret", "admin-token", "log-level"}},
		{"everything missing", func(c *config.Config) {
			*c = *config.Default(c.DataDir)
		}, []string{"hostname", "public-url", "did", "handle", "signing-key", "jwt-secret", "admin-token", "password-hash"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig(t)
			tt.mutate(c)
			err := c.Validate()
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			var ve *config.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("Validate() = %T %v, want *config.ValidationError", err, err)
			}
			var got []string
			for _, p := range ve.Problems {
				got = append(got, p.Field)
				if p.Message == "" {
					t.Errorf("problem %q has no message", p.Field)
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("problems name %v, want %v\n%v", got, tt.want, err)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "invalid configuration:") {
				t.Errorf("error %q does not start with \"invalid configuration:\"", msg)
			}
			for _, f := range tt.want {
				// Each problem is on its own line naming the field, its
				// flag and its environment variable.
				line := regexp.MustCompile(`(?m)^\s*` + regexp.QuoteMeta(f) + ` .*$`).FindString(msg)
				if line == "" {
					t.Errorf("no line of the error names %q:\n%s", f, msg)
					continue
				}
				for _, s := range []string{"--" + f + " ", envName(f)} {
					if !strings.Contains(line, s) {
						t.Errorf("line %q does not name %q", line, s)
					}
				}
			}
		})
	}
}

func TestSaveLoadRoundTrip(t *testing.T) {
	c := validConfig(t)
	c.DataDir = filepath.Join(t.TempDir(), "nested", "data")
	c.Port = 8080
	c.Bind = "0.0.0.0"
	c.InitiallyActive = false
	c.PLCURL = "https://plc.example"
	c.UserDomains = []string{".alice.test", ".bob.test"}
	c.ContactEmail = "ops@pds.test"
	c.PrivacyPolicyURL = "https://pds.test/privacy"
	c.TermsOfServiceURL = "https://pds.test/tos"
	c.LogLevel = "debug"
	if err := c.Save(); err != nil {
		t.Fatalf("Save: %v", err)
	}
	got, err := config.Load(c.DataDir)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if !reflect.DeepEqual(got, c) {
		t.Errorf("Load after Save:\n got  %+v\n want %+v", got, c)
	}
	if !config.Exists(c.DataDir) {
		t.Error("Exists = false after Save")
	}
	if err := got.Validate(); err != nil {
		t.Errorf("loaded config does not validate: %v", err)
	}

	// Secrets go to secrets.json only; settings.json holds none of them.
	settings, err := os.ReadFile(filepath.Join(c.DataDir, config.SettingsFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{c.SigningKey, c.RotationKey, c.JWTSecret, c.AdminToken, c.PasswordHash} {
		if strings.Contains(string(settings), secret) {
			t.Errorf("settings.json contains the secret %q", secret)
		}
	}
	secrets, err := os.ReadFile(filepath.Join(c.DataDir, config.SecretsFile))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(secrets), c.Hostname) {
		t.Errorf("secrets.json contains public settings:\n%s", secrets)
	}
	// The data directory Save creates is private.
	st, err := os.Stat(c.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		t.Errorf("data dir mode %v, want no group/other access", perm)
	}
}

func TestSaveModesAndNoTempFiles(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(t *testing.T, dir string) // state before Save
	}{
		{"fresh directory", func(t *testing.T, dir string) {}},
		{"overwrite", func(t *testing.T, dir string) {
			c := validConfig(t)
			c.DataDir = dir
			c.Handle = "old.test"
			if err := c.Save(); err != nil {
				t.Fatal(err)
			}
		}},
		{"overwrite files with wrong modes", func(t *testing.T, dir string) {
			if err := os.MkdirAll(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			for _, f := range []string{config.SettingsFile, config.SecretsFile} {
				if err := os.WriteFile(filepath.Join(dir, f), []byte("{}"), 0o666); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(filepath.Join(dir, f), 0o666); err != nil {
					t.Fatal(err)
				}
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			tt.prepare(t, dir)
			c := validConfig(t)
			c.DataDir = dir
			if err := c.Save(); err != nil {
				t.Fatalf("Save: %v", err)
			}
			for file, want := range map[string]os.FileMode{config.SettingsFile: 0o644, config.SecretsFile: 0o600} {
				st, err := os.Stat(filepath.Join(dir, file))
				if err != nil {
					t.Fatal(err)
				}
				if got := st.Mode().Perm(); got != want {
					t.Errorf("%s mode %v, want %v", file, got, want)
				}
			}
			entries, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, e := range entries {
				names = append(names, e.Name())
			}
			sort.Strings(names)
			if want := []string{config.SecretsFile, config.SettingsFile}; !slices.Equal(names, want) {
				t.Errorf("data dir holds %v, want only %v (no temp files)", names, want)
			}
			got, err := config.Load(dir)
			if err != nil {
				t.Fatal(err)
			}
			if got.Handle != c.Handle || got.SigningKey != c.SigningKey {
				t.Errorf("Load after overwrite: handle %q key %q, want %q %q", got.Handle, got.SigningKey, c.Handle, c.SigningKey)
			}
		})
	}
}

func TestSaveFailureLeavesNoTempFile(t *testing.T) {
	dir := t.TempDir()
	c := validConfig(t)
	c.DataDir = dir
	// A directory where secrets.json should be makes the final rename fail.
	if err := os.Mkdir(filepath.Join(dir, config.SecretsFile), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, config.SecretsFile, "x"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := c.Save(); err == nil {
		t.Fatal("Save succeeded with a directory in place of secrets.json")
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("temp file %s left behind", e.Name())
		}
	}
}

func TestLoad(t *testing.T) {
	tests := []struct {
		name     string
		settings string // "" means no file
		secrets  string
		wantErr  string
		check    func(t *testing.T, c *config.Config)
	}{
		{name: "missing directory gives defaults", check: func(t *testing.T, c *config.Config) {
			want := config.Default(c.DataDir)
			if !reflect.DeepEqual(c, want) {
				t.Errorf("Load = %+v, want defaults %+v", c, want)
			}
		}},
		{name: "partial file keeps defaults", settings: `{"hostname":"pds.test"}`, check: func(t *testing.T, c *config.Config) {
			if c.Hostname != "pds.test" || c.Port != config.DefaultPort || c.Bind != config.DefaultBind ||
				c.PLCURL != config.DefaultPLCURL || !c.InitiallyActive || c.LogLevel != "info" {
				t.Errorf("Load = %+v, want hostname over defaults", c.Settings)
			}
		}},
		{name: "explicit false and zero override defaults", settings: `{"initially-active":false,"port":0}`, check: func(t *testing.T, c *config.Config) {
			if c.InitiallyActive || c.Port != 0 {
				t.Errorf("initially-active %v port %d, want false 0", c.InitiallyActive, c.Port)
			}
		}},
		{name: "secrets only", secrets: `{"admin-token":"tok"}`, check: func(t *testing.T, c *config.Config) {
			if c.AdminToken != "tok" {
				t.Errorf("admin token %q", c.AdminToken)
			}
		}},
		{name: "malformed settings", settings: `{"hostname":`, wantErr: config.SettingsFile},
		{name: "malformed secrets", settings: `{}`, secrets: `[1]`, wantErr: config.SecretsFile},
		{name: "wrong type", settings: `{"port":"eighty"}`, wantErr: config.SettingsFile},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			if tt.settings != "" || tt.secrets != "" {
				if err := os.MkdirAll(dir, 0o700); err != nil {
					t.Fatal(err)
				}
			}
			if tt.settings != "" {
				if err := os.WriteFile(filepath.Join(dir, config.SettingsFile), []byte(tt.settings), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if tt.secrets != "" {
				if err := os.WriteFile(filepath.Join(dir, config.SecretsFile), []byte(tt.secrets), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			c, err := config.Load(dir)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Load error = %v, want one naming %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if c.DataDir != dir {
				t.Errorf("DataDir = %q, want %q", c.DataDir, dir)
			}
			if got := config.Exists(dir); got != (tt.settings != "") {
				t.Errorf("Exists = %v", got)
			}
			tt.check(t, c)
		})
	}
}

func TestApplyEnv(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		wantErr string // the variable the error must name
		check   func(t *testing.T, c *config.Config)
	}{
		{name: "no variables", env: nil, check: func(t *testing.T, c *config.Config) {
			if want := config.Default(c.DataDir); !reflect.DeepEqual(c, want) {
				t.Errorf("config changed without variables: %+v", c)
			}
		}},
		{name: "public url, port, initially active", env: map[string]string{
			"PDS_PUBLIC_URL":       "https://env.test",
			"PDS_PORT":             "8080",
			"PDS_INITIALLY_ACTIVE": "false",
		}, check: func(t *testing.T, c *config.Config) {
			if c.PublicURL != "https://env.test" || c.Port != 8080 || c.InitiallyActive {
				t.Errorf("got public-url %q port %d initially-active %v", c.PublicURL, c.Port, c.InitiallyActive)
			}
		}},
		{name: "empty values do not override", env: map[string]string{"PDS_PORT": "", "PDS_BIND": ""}, check: func(t *testing.T, c *config.Config) {
			if c.Port != config.DefaultPort || c.Bind != config.DefaultBind {
				t.Errorf("empty variables overrode: port %d bind %q", c.Port, c.Bind)
			}
		}},
		{name: "secrets and lists", env: map[string]string{
			"PDS_ADMIN_TOKEN":        "from-env-token-123",
			"PDS_SIGNING_KEY_PUBLIC": "did:key:zQ3x",
			"PDS_USER_DOMAINS":       " .a.test, ,.b.test ",
			"PDS_LOG_LEVEL":          "debug",
		}, check: func(t *testing.T, c *config.Config) {
			if c.AdminToken != "from-env-token-123" || c.SigningKeyPublic != "did:key:zQ3x" || c.LogLevel != "debug" {
				t.Errorf("got %+v", c)
			}
			if want := []string{".a.test", ".b.test"}; !slices.Equal(c.UserDomains, want) {
				t.Errorf("user domains %q, want %q", c.UserDomains, want)
			}
		}},
		{name: "unrelated variables ignored", env: map[string]string{"PDS_DATA_DIR": "/elsewhere", "HOSTNAME": "box", "PDS_PASSWORD": "x"}, check: func(t *testing.T, c *config.Config) {
			if c.Hostname != "" {
				t.Errorf("HOSTNAME leaked into hostname: %q", c.Hostname)
			}
		}},
		{name: "bad port", env: map[string]string{"PDS_PORT": "eighty"}, wantErr: "PDS_PORT"},
		{name: "port out of range", env: map[string]string{"PDS_PORT": "65536"}, wantErr: "PDS_PORT"},
		{name: "negative port", env: map[string]string{"PDS_PORT": "-1"}, wantErr: "PDS_PORT"},
		{name: "bad boolean", env: map[string]string{"PDS_INITIALLY_ACTIVE": "maybe"}, wantErr: "PDS_INITIALLY_ACTIVE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := config.Default(t.TempDir())
			err := c.ApplyEnv(func(k string) string { return tt.env[k] })
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("ApplyEnv succeeded, want an error naming %s", tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("error %q does not name %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ApplyEnv: %v", err)
			}
			tt.check(t, c)
		})
	}
}

// jsonNames returns the JSON keys of a struct type's fields.
func jsonNames(t reflect.Type) []string {
	var names []string
	for i := range t.NumField() {
		tag := t.Field(i).Tag.Get("json")
		name, _, _ := strings.Cut(tag, ",")
		if name != "" && name != "-" {
			names = append(names, name)
		}
	}
	return names
}

func TestFields(t *testing.T) {
	fields := config.Fields()
	byName := map[string]config.Field{}
	for _, f := range fields {
		if _, dup := byName[f.Name]; dup {
			t.Errorf("field %q listed twice", f.Name)
		}
		byName[f.Name] = f
		if !regexp.MustCompile(`^[a-z]+(-[a-z]+)*$`).MatchString(f.Name) {
			t.Errorf("field name %q is not lower kebab case", f.Name)
		}
		if got, want := f.Env(), envName(f.Name); got != want {
			t.Errorf("%s.Env() = %q, want %q", f.Name, got, want)
		}
		if f.Usage == "" {
			t.Errorf("field %q has no usage text", f.Name)
		}
	}

	t.Run("spelled as in the files", func(t *testing.T) {
		// "spelled the same way in all three places": every key of
		// settings.json and secrets.json is a field, and the other way round.
		var fileNames []string
		fileNames = append(fileNames, jsonNames(reflect.TypeOf(config.Settings{}))...)
		fileNames = append(fileNames, jsonNames(reflect.TypeOf(config.Secrets{}))...)
		sort.Strings(fileNames)
		var fieldNames []string
		for name := range byName {
			fieldNames = append(fieldNames, name)
		}
		sort.Strings(fieldNames)
		if !slices.Equal(fileNames, fieldNames) {
			t.Errorf("file keys %v\nfield names %v", fileNames, fieldNames)
		}
		for _, name := range jsonNames(reflect.TypeOf(config.Secrets{})) {
			if f, ok := byName[name]; ok && !f.Secret {
				t.Errorf("%s is stored in secrets.json but not marked Secret", name)
			}
		}
		for _, name := range jsonNames(reflect.TypeOf(config.Settings{})) {
			if f, ok := byName[name]; ok && f.Secret {
				t.Errorf("%s is stored in settings.json but marked Secret", name)
			}
		}
	})

	t.Run("env spellings", func(t *testing.T) {
		for name, env := range map[string]string{
			"hostname":             "PDS_HOSTNAME",
			"public-url":           "PDS_PUBLIC_URL",
			"port":                 "PDS_PORT",
			"plc-url":              "PDS_PLC_URL",
			"initially-active":     "PDS_INITIALLY_ACTIVE",
			"signing-key-public":   "PDS_SIGNING_KEY_PUBLIC",
			"terms-of-service-url": "PDS_TERMS_OF_SERVICE_URL",
			"jwt-secret":           "PDS_JWT_SECRET",
			"admin-token":          "PDS_ADMIN_TOKEN",
		} {
			f, ok := byName[name]
			if !ok {
				t.Errorf("no field %q", name)
				continue
			}
			if f.Env() != env {
				t.Errorf("%s.Env() = %q, want %q", name, f.Env(), env)
			}
		}
	})

	t.Run("set then get", func(t *testing.T) {
		for _, tt := range []struct{ name, value, want string }{
			{"hostname", "pds.test", "pds.test"},
			{"port", "8080", "8080"},
			{"initially-active", "false", "false"},
			{"initially-active", "1", "true"},
			{"user-domains", ".a.test,.b.test", ".a.test,.b.test"},
			{"admin-token", "tok", "tok"},
		} {
			c := config.Default(t.TempDir())
			f := byName[tt.name]
			if err := f.Set(c, tt.value); err != nil {
				t.Errorf("Set(%s, %q): %v", tt.name, tt.value, err)
				continue
			}
			if got := f.Get(c); got != tt.want {
				t.Errorf("Get(%s) = %q, want %q", tt.name, got, tt.want)
			}
		}
		err := byName["port"].Set(config.Default(""), "x")
		if err == nil || !strings.HasPrefix(err.Error(), "port:") {
			t.Errorf("Set(port, x) = %v, want an error starting with the field name", err)
		}
	})
}

func TestWebDID(t *testing.T) {
	for _, tt := range []struct{ origin, want string }{
		{"https://pds.test", "did:web:pds.test"},
		{"http://localhost:2583", "did:web:localhost%3A2583"},
		{"https://pds.example.com:8443", "did:web:pds.example.com%3A8443"},
		{"::bad", ""},
	} {
		t.Run(tt.origin, func(t *testing.T) {
			if got := config.WebDID(tt.origin); got.String() != tt.want {
				t.Errorf("WebDID(%q) = %q, want %q", tt.origin, got, tt.want)
			}
		})
	}
}

func TestServiceDID(t *testing.T) {
	c := config.Default("")
	c.Hostname = "pds.test"
	if got := c.ServiceDID(); got != "did:web:pds.test" {
		t.Errorf("ServiceDID = %q", got)
	}
}

func TestParseKey(t *testing.T) {
	k, _ := newKey(t)
	p256, err := atcrypto.GeneratePrivateKeyP256()
	if err != nil {
		t.Fatal(err)
	}
	hexKey := config.EncodeKey(k)
	if hexKey != hex.EncodeToString(k.Bytes()) {
		t.Errorf("EncodeKey = %q, want lower-case hex of the key bytes", hexKey)
	}
	tests := []struct {
		name  string
		in    string
		valid bool
	}{
		{"hex", hexKey, true},
		{"upper-case hex", strings.ToUpper(hexKey), true},
		{"hex with whitespace", "  " + hexKey + "\n", true},
		{"multibase", k.Multibase(), true},
		{"multibase with whitespace", "\t" + k.Multibase() + " ", true},
		{"empty", "", false},
		{"garbage", "not a key", false},
		{"short hex", "abcd", false},
		{"hex too long", hexKey + "00", false},
		{"truncated multibase", k.Multibase()[:20], false},
		{"did:key", fmt.Sprintf("did:key:%s", k.Multibase()), false},
		{"p256 multibase", p256.Multibase(), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := config.ParseKey(tt.in)
			if !tt.valid {
				if err == nil {
					t.Fatalf("ParseKey(%q) succeeded", tt.in)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseKey: %v", err)
			}
			if !got.Equal(k) {
				t.Error("parsed key differs from the original")
			}
			if config.EncodeKey(got) != hexKey {
				t.Error("EncodeKey(ParseKey(x)) does not round-trip")
			}
		})
	}
}
