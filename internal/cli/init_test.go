package cli_test

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"golang.org/x/crypto/bcrypt"

	"stratus/internal/config"
	"stratus/internal/identity/plctest"
)

const testPassword = "correct horse battery"

// checkFiles checks the modes of both data directory files and returns
// their parsed contents.
func checkFiles(t *testing.T, dir string) (settings, secrets map[string]any) {
	t.Helper()
	for file, want := range map[string]os.FileMode{config.SettingsFile: 0o644, config.SecretsFile: 0o600} {
		st, err := os.Stat(filepath.Join(dir, file))
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if got := st.Mode().Perm(); got != want {
			t.Errorf("%s mode %v, want %v", file, got, want)
		}
	}
	return readJSONFile(t, filepath.Join(dir, config.SettingsFile)), readJSONFile(t, filepath.Join(dir, config.SecretsFile))
}

// publicOf returns the did:key of a stored signing key.
func publicOf(t *testing.T, hexKey string) string {
	t.Helper()
	k, err := config.ParseKey(hexKey)
	if err != nil {
		t.Fatalf("stored key does not parse: %v", err)
	}
	pub, err := k.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return pub.DIDKey()
}

func checkHash(t *testing.T, hash, password string) {
	t.Helper()
	if !strings.HasPrefix(hash, "$2") {
		t.Fatalf("password-hash %q is not bcrypt", hash)
	}
	if err := bcrypt.CompareHashAndPassword([]byte(hash), []byte(password)); err != nil {
		t.Errorf("password-hash does not match the password: %v", err)
	}
}

func TestInitWeb(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	r := mustRun(t, nil, initArgs(dir, "--password", testPassword)...)

	settings, secrets := checkFiles(t, dir)
	for k, want := range map[string]string{
		"did":        "did:web:pds.test",
		"handle":     "alice.test",
		"hostname":   "pds.test",
		"public-url": "https://pds.test",
		"email":      "a@b.c",
	} {
		if got := str(t, settings, k); got != want {
			t.Errorf("settings %s = %q, want %q", k, got, want)
		}
	}
	signingKey := str(t, secrets, "signing-key")
	if got, want := str(t, settings, "signing-key-public"), publicOf(t, signingKey); got != want {
		t.Errorf("signing-key-public %q does not match signing-key (%q)", got, want)
	}
	jwt := str(t, secrets, "jwt-secret")
	if len(jwt) < 32 {
		t.Errorf("jwt-secret %q too short", jwt)
	}
	admin := str(t, secrets, "admin-token")
	if len(admin) < 16 {
		t.Errorf("admin-token %q too short", admin)
	}
	hash := str(t, secrets, "password-hash")
	checkHash(t, hash, testPassword)
	if _, ok := secrets["rotation-key"]; ok {
		t.Error("a did:web directory has a rotation key")
	}
	for _, k := range []string{"signing-key", "jwt-secret", "admin-token", "password-hash", "rotation-key"} {
		if _, ok := settings[k]; ok {
			t.Errorf("settings.json holds the secret %s", k)
		}
	}
	c, err := config.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("initialised directory does not validate: %v", err)
	}

	// Shown once: the DID, the admin token and the signing key, with the
	// backup warning; never the password given, the JWT secret or the hash.
	for _, once := range []string{admin, signingKey} {
		if n := strings.Count(r.stdout, once); n != 1 {
			t.Errorf("stdout shows %q %d times, want once:\n%s", once, n, r.stdout)
		}
	}
	for _, want := range []string{"did:web:pds.test", "alice.test", "WARNING", "back that file up"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, r.stdout)
		}
	}
	for _, never := range []string{testPassword, jwt, hash} {
		if strings.Contains(r.stdout+r.stderr, never) {
			t.Errorf("output shows %q:\n%s", never, r)
		}
	}
	if strings.Contains(strings.ToLower(r.stdout), "password") {
		t.Errorf("stdout mentions a password although it was given:\n%s", r.stdout)
	}
}

func TestInitJSON(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name          string
		args          []string
		env           map[string]string
		wantGenerated bool
	}{
		{name: "given password", args: []string{"--password", testPassword}},
		{name: "password from PDS_PASSWORD", env: map[string]string{"PDS_PASSWORD": testPassword}},
		{name: "generated password", wantGenerated: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(t.TempDir(), "data")
			r := mustRun(t, tt.env, initArgs(dir, append([]string{"--json"}, tt.args...)...)...)
			var out initOutput
			keys := decodeOne(t, r.stdout, &out)
			for _, k := range []string{"did", "handle", "adminToken", "signingKey", "signingKeyPublic"} {
				if _, ok := keys[k]; !ok {
					t.Errorf("JSON lacks %q: %s", k, r.stdout)
				}
			}
			if _, ok := keys["password"]; ok != tt.wantGenerated {
				t.Errorf("JSON has password: %v, want %v", ok, tt.wantGenerated)
			}
			for _, k := range []string{"rotationKey", "rotationKeyPublic"} {
				if _, ok := keys[k]; ok {
					t.Errorf("did:web JSON has %q", k)
				}
			}
			if out.DID != "did:web:pds.test" || out.Handle != "alice.test" || out.Existing {
				t.Errorf("JSON = %+v", out)
			}
			_, secrets := checkFiles(t, dir)
			if out.AdminToken != str(t, secrets, "admin-token") || out.SigningKey != str(t, secrets, "signing-key") {
				t.Error("printed admin token or signing key differs from secrets.json")
			}
			if out.SigningKeyPublic != publicOf(t, out.SigningKey) {
				t.Error("signingKeyPublic does not match signingKey")
			}
			password := testPassword
			if tt.wantGenerated {
				password = out.Password
				if len(password) < 8 {
					t.Fatalf("generated password %q is too short", password)
				}
				if n := strings.Count(r.stdout, password); n != 1 {
					t.Errorf("generated password printed %d times", n)
				}
			}
			checkHash(t, str(t, secrets, "password-hash"), password)
			if strings.Contains(r.stdout, str(t, secrets, "jwt-secret")) {
				t.Error("JSON shows the JWT secret")
			}
		})
	}
}

func TestInitGeneratedPasswordHuman(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	r := mustRun(t, nil, initArgs(dir)...)
	_, secrets := checkFiles(t, dir)
	var password string
	for _, line := range strings.Split(r.stdout, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "Account password"); ok {
			password = strings.TrimSpace(rest)
		}
	}
	if password == "" {
		t.Fatalf("no generated password in stdout:\n%s", r.stdout)
	}
	if n := strings.Count(r.stdout, password); n != 1 {
		t.Errorf("password printed %d times", n)
	}
	checkHash(t, str(t, secrets, "password-hash"), password)
}

func TestInitPLC(t *testing.T) {
	t.Parallel()
	plc := plctest.NewServer(t)
	dir := filepath.Join(t.TempDir(), "data")
	r := mustRun(t, nil, initArgs(dir, "--did-method", "plc", "--plc-url", plc.URL(), "--json")...)
	var out initOutput
	decodeOne(t, r.stdout, &out)

	if !strings.HasPrefix(out.DID, "did:plc:") {
		t.Fatalf("DID %q is not a did:plc", out.DID)
	}
	if _, err := syntax.ParseDID(out.DID); err != nil {
		t.Errorf("DID %q does not parse: %v", out.DID, err)
	}
	op, ok := plc.Operation(syntax.DID(out.DID))
	if !ok {
		t.Fatalf("PLC directory holds no operation for %s (holds %d)", out.DID, plc.Len())
	}
	if op.Prev != nil {
		t.Errorf("registered operation is not a genesis: prev %q", *op.Prev)
	}
	if got := op.VerificationMethods["atproto"]; got != out.SigningKeyPublic || got == "" {
		t.Errorf("verificationMethods.atproto = %q, want signingKeyPublic %q", got, out.SigningKeyPublic)
	}
	if out.RotationKey == "" || out.RotationKeyPub == "" {
		t.Fatalf("rotation key not printed: %s", r.stdout)
	}
	if len(op.RotationKeys) == 0 || op.RotationKeys[0] != out.RotationKeyPub {
		t.Errorf("rotationKeys = %v, want %s first", op.RotationKeys, out.RotationKeyPub)
	}
	if got := publicOf(t, out.RotationKey); got != out.RotationKeyPub {
		t.Errorf("rotationKeyPublic %s does not match rotationKey (%s)", out.RotationKeyPub, got)
	}
	if !slices.Contains(op.AlsoKnownAs, "at://alice.test") {
		t.Errorf("alsoKnownAs = %v", op.AlsoKnownAs)
	}
	if got := op.Services["atproto_pds"].Endpoint; got != "https://pds.test" {
		t.Errorf("atproto_pds endpoint = %q", got)
	}
	if n := strings.Count(r.stdout, out.RotationKey); n != 1 {
		t.Errorf("rotation key printed %d times, want once", n)
	}

	settings, secrets := checkFiles(t, dir)
	if str(t, settings, "did") != out.DID {
		t.Errorf("settings did = %v, want %s", settings["did"], out.DID)
	}
	if str(t, settings, "plc-url") != plc.URL() {
		t.Errorf("settings plc-url = %v, want %s", settings["plc-url"], plc.URL())
	}
	if str(t, secrets, "rotation-key") != out.RotationKey {
		t.Error("rotation key in secrets.json differs from the printed one")
	}
	if str(t, secrets, "signing-key") != out.SigningKey {
		t.Error("signing key in secrets.json differs from the printed one")
	}

	// Re-running keeps the did:plc identity and registers nothing more.
	r2 := mustRun(t, nil, "init", "--data-dir", dir, "--yes", "--json")
	var again initOutput
	decodeOne(t, r2.stdout, &again)
	if again.DID != out.DID || again.RotationKey != "" || again.SigningKey != "" || !again.Existing {
		t.Errorf("re-run JSON = %+v", again)
	}
	if plc.Len() != 1 {
		t.Errorf("PLC directory holds %d DIDs after re-run, want 1", plc.Len())
	}
	_, secrets2 := checkFiles(t, dir)
	if str(t, secrets2, "rotation-key") != out.RotationKey {
		t.Error("re-run changed the rotation key")
	}
}

func TestInitPLCDirectoryFails(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		handler http.HandlerFunc
	}{
		{"500 with message", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusInternalServerError)
			w.Write([]byte(`{"message":"directory on fire"}`))
		}},
		{"400 plain text", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "bad op", http.StatusBadRequest)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			plc := httptest.NewServer(tt.handler)
			t.Cleanup(plc.Close)
			parent := t.TempDir()
			dir := filepath.Join(parent, "data")
			r := run(t, nil, initArgs(dir, "--did-method", "plc", "--plc-url", plc.URL, "--json")...)
			if r.code == 0 {
				t.Fatalf("init succeeded with a failing PLC directory: %v", r)
			}
			if !strings.Contains(r.stderr, plc.URL) {
				t.Errorf("error does not name the directory %s:\n%s", plc.URL, r.stderr)
			}
			if r.stdout != "" {
				t.Errorf("stdout not empty (secrets of a failed init?):\n%s", r.stdout)
			}
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Errorf("data dir written although registration failed: %v %v", err, snapshot(t, dir))
			}
		})
	}
}

// TestInitPLCValidatesBeforeRegistering: init must not register a did:plc
// with the directory and then fail validation, discarding the only copy of
// the rotation key that controls the new identity.
func TestInitPLCValidatesBeforeRegistering(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
	}{
		{"bad log level", []string{"--log-level", "loud"}},
		{"public url with a path", []string{"--public-url", "https://pds.test/pds"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			plc := plctest.NewServer(t)
			dir := filepath.Join(t.TempDir(), "data")
			args := append(initArgs(dir, "--did-method", "plc", "--plc-url", plc.URL()), tt.args...)
			r := run(t, nil, args...)
			if r.code == 0 {
				t.Fatalf("init succeeded with an invalid setting: %v", r)
			}
			if n := plc.Len(); n != 0 {
				t.Errorf("init registered %d DID(s) with the PLC directory, then failed validation and "+
					"wrote no files: the rotation key of the registered DID is lost\n%v", n, r)
			}
		})
	}
}

func TestInitRerun(t *testing.T) {
	t.Parallel()
	secretKeys := []string{"signing-key", "admin-token", "jwt-secret", "password-hash"}
	tests := []struct {
		name     string
		args     []string
		env      map[string]string
		wantCode int
		wantErr  string
	}{
		{name: "plain", args: []string{"--yes"}},
		{name: "json", args: []string{"--yes", "--json"}},
		{name: "did-method web", args: []string{"--yes", "--did-method", "web"}},
		{name: "password flag refused", args: []string{"--yes", "--password", "x"}, wantCode: 2, wantErr: "password"},
		{name: "long password flag refused", args: []string{"--yes", "--password", "another long password"}, wantCode: 2, wantErr: "password"},
		{name: "PDS_PASSWORD refused", args: []string{"--yes"}, env: map[string]string{"PDS_PASSWORD": "another long password"}, wantCode: 2, wantErr: "password"},
		{name: "did-method plc refused", args: []string{"--yes", "--did-method", "plc"}, wantCode: 2, wantErr: "did-method"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			plc := plctest.NewServer(t)
			dir := filepath.Join(t.TempDir(), "data")
			first := initDir(t, dir, "--password", testPassword)
			_, before := checkFiles(t, dir)
			files := snapshot(t, dir)

			args := append([]string{"init", "--data-dir", dir, "--plc-url", plc.URL()}, tt.args...)
			r := run(t, tt.env, args...)
			if r.code != tt.wantCode {
				t.Fatalf("exit %d, want %d: %v", r.code, tt.wantCode, r)
			}
			if tt.wantErr != "" && !strings.Contains(r.stderr, tt.wantErr) {
				t.Errorf("stderr does not mention %q: %s", tt.wantErr, r.stderr)
			}
			if tt.wantCode != 0 {
				if got := snapshot(t, dir); !mapsEqual(got, files) {
					t.Errorf("refused init changed the data dir:\n before %v\n after  %v", files, got)
				}
			}
			if plc.Len() != 0 {
				t.Errorf("re-run contacted the PLC directory")
			}
			settings, after := checkFiles(t, dir)
			for _, k := range secretKeys {
				if str(t, before, k) != str(t, after, k) {
					t.Errorf("%s changed", k)
				}
				if strings.Contains(r.stdout, str(t, after, k)) {
					t.Errorf("re-run printed %s", k)
				}
			}
			if str(t, settings, "did") != first.DID {
				t.Errorf("did changed to %v", settings["did"])
			}
			if strings.Contains(r.stdout, "Shown once") || strings.Contains(r.stdout, "WARNING") {
				t.Errorf("re-run prints a secrets section:\n%s", r.stdout)
			}
			if slices.Contains(tt.args, "--json") {
				var out initOutput
				keys := decodeOne(t, r.stdout, &out)
				for _, k := range []string{"adminToken", "signingKey", "password", "rotationKey"} {
					if _, ok := keys[k]; ok {
						t.Errorf("re-run JSON has %q", k)
					}
				}
				if !out.Existing || out.DID != first.DID {
					t.Errorf("re-run JSON = %+v", out)
				}
			}
		})
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestInitUsageErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
	}{
		{"no hostname", []string{"init", "--yes"}, 2, "--hostname"},
		{"bad did method", []string{"init", "--yes", "--hostname", "pds.test", "--did-method", "key"}, 2, "--did-method"},
		{"short password", []string{"init", "--yes", "--hostname", "pds.test", "--password", "short"}, 2, "--password"},
		{"bad port flag", []string{"init", "--yes", "--hostname", "pds.test", "--port", "http"}, 2, "--port"},
		{"bad handle", []string{"init", "--yes", "--hostname", "pds.test", "--handle", "not a handle"}, 1, "handle"},
		{"secret flags are not init flags", []string{"init", "--yes", "--hostname", "pds.test", "--admin-token", "0123456789abcdef0"}, 2, "admin-token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(t.TempDir(), "data")
			r := run(t, nil, append(tt.args, "--data-dir", dir)...)
			if r.code != tt.wantCode {
				t.Fatalf("exit %d, want %d: %v", r.code, tt.wantCode, r)
			}
			if !strings.Contains(r.stderr, tt.wantErr) {
				t.Errorf("stderr does not mention %q: %s", tt.wantErr, r.stderr)
			}
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Errorf("failed init wrote %v", snapshot(t, dir))
			}
		})
	}
}

func TestInitDerivesDefaults(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want map[string]string // settings.json values
	}{
		{"hostname only", []string{"--hostname", "pds.test"}, nil, map[string]string{
			"hostname": "pds.test", "public-url": "https://pds.test", "handle": "pds.test", "did": "did:web:pds.test"}},
		{"public url only, trailing slash", []string{"--public-url", "https://pds.test/"}, nil, map[string]string{
			"hostname": "pds.test", "public-url": "https://pds.test", "did": "did:web:pds.test"}},
		{"localhost gets http and the port", []string{"--hostname", "localhost", "--port", "2600", "--handle", "dev.test"}, nil, map[string]string{
			"public-url": "http://localhost:2600", "did": "did:web:localhost%3A2600"}},
		{"public url with port", []string{"--public-url", "http://localhost:8080", "--handle", "dev.test"}, nil, map[string]string{
			"hostname": "localhost", "did": "did:web:localhost%3A8080"}},
		{"handle normalised", []string{"--hostname", "pds.test", "--handle", "Alice.Test"}, nil, map[string]string{
			"handle": "alice.test"}},
		{"settings from the environment", nil, map[string]string{"PDS_HOSTNAME": "env.test", "PDS_HANDLE": "bob.test", "PDS_PLC_URL": "https://plc.test/"}, map[string]string{
			"hostname": "env.test", "handle": "bob.test", "did": "did:web:env.test", "plc-url": "https://plc.test"}},
		{"flags override the environment", []string{"--handle", "carol.test"}, map[string]string{"PDS_HOSTNAME": "env.test", "PDS_HANDLE": "bob.test"}, map[string]string{
			"handle": "carol.test"}},
		{"data dir from the environment", []string{"--hostname", "pds.test"}, map[string]string{"PDS_DATA_DIR": "FROM_ENV"}, map[string]string{
			"hostname": "pds.test"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(t.TempDir(), "data")
			args := append([]string{"init", "--yes", "--json"}, tt.args...)
			env := map[string]string{}
			for k, v := range tt.env {
				env[k] = v
			}
			if env["PDS_DATA_DIR"] == "FROM_ENV" {
				env["PDS_DATA_DIR"] = dir
			} else {
				args = append(args, "--data-dir", dir)
			}
			r := mustRun(t, env, args...)
			var out initOutput
			decodeOne(t, r.stdout, &out)
			if out.DataDir != dir {
				t.Errorf("dataDir = %q, want %q", out.DataDir, dir)
			}
			settings, _ := checkFiles(t, dir)
			for k, want := range tt.want {
				if got := str(t, settings, k); got != want {
					t.Errorf("settings %s = %q, want %q", k, got, want)
				}
			}
			if out.DID != str(t, settings, "did") || out.Handle != str(t, settings, "handle") {
				t.Errorf("printed %s %s, settings hold %v %v", out.DID, out.Handle, settings["did"], settings["handle"])
			}
		})
	}
}
