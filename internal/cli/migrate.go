package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"charm.land/huh/v2"
	"github.com/spf13/cobra"

	"stratus/internal/config"
)

type migrateOptions struct {
	from        string
	identifier  string
	password    string
	newPassword string
	plcToken    string
	plcURL      string
	keepOld     bool
}

func newMigrateCmd(e IO) *cobra.Command {
	in := newMigrateInCmd(e)
	return newGroupCmd("migrate", "Move an account between servers",
		`migrate moves an account onto this server from another PDS (bsky.social,
another Stratus, any atproto PDS). Moving away from this server needs nothing
from this command: use the new host's tools (for example goat account migrate),
and give them the PLC token from "pds identity plc-token".`,
		`  pds migrate in --from https://bsky.social --identifier alice.example.com`,
		in)
}

func newMigrateInCmd(e IO) *cobra.Command {
	var o migrateOptions
	cmd := &cobra.Command{
		Use:   "in",
		Short: "Move an account from another PDS onto this server",
		Long: `in moves the account this data directory was prepared for (pds init --migrate)
from its current PDS onto this server, as "goat account migrate" does:

  1. log in to the old PDS and get a service token for createAccount here;
  2. claim the prepared account here (createAccount), setting its password;
  3. copy the repository (sync.getRepo there, importRepo here);
  4. copy the blobs the records reference (listMissingBlobs, getBlob, uploadBlob);
  5. copy the preferences;
  6. move the identity: for did:plc the old PDS signs a PLC operation (with the
     token it emails you, or for a Stratus "pds identity plc-token") and this
     server submits it; for did:web the document to publish is printed;
  7. activate the account here and deactivate it on the old PDS.

Every step can be repeated: if the command stops (a missing PLC token, a
network error), run it again with the same arguments and it picks up where
it can. Passwords and tokens are never printed.`,
		Example: `  pds migrate in --from https://bsky.social --identifier alice.example.com
  PDS_OLD_PASSWORD=... pds migrate in --from https://old.example.com --identifier did:plc:abc --plc-token ABCDE-12345`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runMigrateIn(cmd, e, o) },
	}
	f := cmd.Flags()
	f.StringVar(&o.from, "from", "", "URL of the old PDS, e.g. https://bsky.social")
	f.StringVar(&o.identifier, "identifier", "", "handle or DID of the account on the old PDS")
	f.StringVar(&o.password, "password", "", "account password on the old PDS (env PDS_OLD_PASSWORD)")
	f.StringVar(&o.newPassword, "new-password", "", "account password here (env PDS_NEW_PASSWORD; default: the old one)")
	f.StringVar(&o.plcToken, "plc-token", "", "PLC operation token from the old PDS (env PDS_PLC_TOKEN; asked for when needed)")
	f.StringVar(&o.plcURL, "plc-url", "", "PLC directory (default: this server's plc-url setting)")
	f.BoolVar(&o.keepOld, "keep-old", false, "do not deactivate the account on the old PDS at the end")
	addClientFlags(cmd)
	return cmd
}

// migrator carries one run of pds migrate in.
type migrator struct {
	e      IO
	o      migrateOptions
	old    *xrpcClient
	target *xrpcClient
	did    string
	handle string
}

func runMigrateIn(cmd *cobra.Command, e IO, o migrateOptions) error {
	ctx := cmd.Context()
	if o.password == "" {
		o.password = e.Getenv("PDS_OLD_PASSWORD")
	}
	if o.newPassword == "" {
		o.newPassword = e.Getenv("PDS_NEW_PASSWORD")
	}
	if o.plcToken == "" {
		o.plcToken = e.Getenv("PDS_PLC_TOKEN")
	}
	if e.interactive() && (o.from == "" || o.identifier == "" || o.password == "") {
		var fields []huh.Field
		if o.from == "" {
			fields = append(fields, huh.NewInput().Title("Old PDS").Description("e.g. https://bsky.social").Value(&o.from))
		}
		if o.identifier == "" {
			fields = append(fields, huh.NewInput().Title("Handle or DID on the old PDS").Value(&o.identifier))
		}
		if o.password == "" {
			fields = append(fields, huh.NewInput().Title("Password on the old PDS").EchoMode(huh.EchoModePassword).Value(&o.password))
		}
		if err := runForm(cmd, e, huh.NewGroup(fields...)); err != nil {
			return err
		}
	}
	if o.from == "" || o.identifier == "" || o.password == "" {
		return usageError{"--from, --identifier and --password (or PDS_OLD_PASSWORD) are required"}
	}
	from, err := parseServerURL(o.from)
	if err != nil {
		return usageError{strings.Replace(err.Error(), "--server", "--from", 1)}
	}
	admin, err := newAdminClient(cmd, e)
	if err != nil {
		return err
	}
	if o.plcURL == "" {
		o.plcURL = config.DefaultPLCURL
		if c, err := loadConfig(cmd, e); err == nil && c.PLCURL != "" {
			o.plcURL = c.PLCURL
		}
	}
	if o.newPassword == "" {
		o.newPassword = o.password
	}
	m := &migrator{e: e, o: o, old: newXRPCClient(from), target: newXRPCClient(admin.base)}
	return m.run(ctx, cmd)
}

func (m *migrator) step(format string, args ...any) {
	fmt.Fprintf(m.e.Stdout, "• "+format+"\n", args...)
}

func (m *migrator) run(ctx context.Context, cmd *cobra.Command) error {
	// 1. The old PDS.
	var sess struct {
		AccessJWT string `json:"accessJwt"`
		DID       string `json:"did"`
		Handle    string `json:"handle"`
	}
	if err := m.old.call(ctx, "com.atproto.server.createSession", nil, map[string]string{"identifier": m.o.identifier, "password": m.o.password}, &sess); err != nil {
		return fmt.Errorf("log in to the old PDS: %w", err)
	}
	m.old.token, m.did = sess.AccessJWT, sess.DID
	m.step("Logged in to %s as %s (%s)", m.old.base, sess.Handle, m.did)

	// 2. This server must be prepared for the DID.
	var repoDesc struct {
		Handle string `json:"handle"`
	}
	if err := m.target.call(ctx, "com.atproto.repo.describeRepo", url.Values{"repo": {m.did}}, nil, &repoDesc); err != nil {
		return fmt.Errorf("this server does not host %s (prepare it with pds init --migrate --did %s): %w", m.did, m.did, err)
	}
	m.handle = repoDesc.Handle
	var desc struct {
		DID string `json:"did"`
	}
	if err := m.target.call(ctx, "com.atproto.server.describeServer", nil, nil, &desc); err != nil {
		return err
	}

	// 3. Claim the prepared account with a service token from the old PDS.
	var svc struct {
		Token string `json:"token"`
	}
	q := url.Values{"aud": {desc.DID}, "lxm": {"com.atproto.server.createAccount"}, "exp": {fmt.Sprint(time.Now().Add(10 * time.Minute).Unix())}}
	if err := m.old.call(ctx, "com.atproto.server.getServiceAuth", q, nil, &svc); err != nil {
		return fmt.Errorf("get a service token from the old PDS: %w", err)
	}
	create := newXRPCClient(m.target.base)
	create.token = svc.Token
	err := create.call(ctx, "com.atproto.server.createAccount", nil, map[string]string{"did": m.did, "handle": m.handle, "password": m.o.newPassword}, nil)
	var xe *xrpcError
	switch {
	case err == nil:
		m.step("Claimed the account here")
	case errors.As(err, &xe) && strings.Contains(xe.Message, "already exists"):
		m.step("The account was claimed here before")
	default:
		return fmt.Errorf("create the account here: %w", err)
	}
	var here struct {
		AccessJWT string `json:"accessJwt"`
		Active    *bool  `json:"active"`
	}
	if err := m.target.call(ctx, "com.atproto.server.createSession", nil, map[string]string{"identifier": m.did, "password": m.o.newPassword}, &here); err != nil {
		return fmt.Errorf("log in here: %w", err)
	}
	m.target.token = here.AccessJWT
	if here.Active != nil && *here.Active {
		m.step("The account is already active here; nothing to copy")
		return m.finish(ctx)
	}

	if err := m.copyRepo(ctx); err != nil {
		return err
	}
	if err := m.copyBlobs(ctx); err != nil {
		return err
	}
	m.copyPrefs(ctx)
	if err := m.moveIdentity(ctx, cmd); err != nil {
		return err
	}
	if err := m.target.call(ctx, "com.atproto.server.activateAccount", nil, struct{}{}, nil); err != nil {
		return fmt.Errorf("activate the account here: %w", err)
	}
	m.step("Activated the account here")
	return m.finish(ctx)
}

// finish deactivates the account on the old PDS.
func (m *migrator) finish(ctx context.Context) error {
	if m.o.keepOld {
		m.step("Left the account active on the old PDS (--keep-old)")
	} else if err := m.old.call(ctx, "com.atproto.server.deactivateAccount", nil, struct{}{}, nil); err != nil {
		return fmt.Errorf("deactivate the account on the old PDS: %w", err)
	} else {
		m.step("Deactivated the account on the old PDS")
	}
	fmt.Fprintf(m.e.Stdout, "\n%s now lives on this server.\n", m.did)
	return nil
}

func (m *migrator) copyRepo(ctx context.Context) error {
	resp, err := m.old.stream(ctx, http.MethodGet, "com.atproto.sync.getRepo", url.Values{"did": {m.did}}, nil, "")
	if err != nil {
		return fmt.Errorf("export the repository from the old PDS: %w", err)
	}
	defer resp.Body.Close()
	counted := &countingReader{r: resp.Body}
	imp, err := m.target.stream(ctx, http.MethodPost, "com.atproto.repo.importRepo", nil, counted, "application/vnd.ipld.car")
	if err != nil {
		return fmt.Errorf("import the repository here: %w", err)
	}
	imp.Body.Close()
	var st accountStatus
	if err := m.target.call(ctx, "com.atproto.server.checkAccountStatus", nil, nil, &st); err != nil {
		return err
	}
	m.step("Copied the repository: %d records, %d bytes", st.IndexedRecords, counted.n)
	return nil
}

type accountStatus struct {
	IndexedRecords int64 `json:"indexedRecords"`
	ExpectedBlobs  int64 `json:"expectedBlobs"`
	ImportedBlobs  int64 `json:"importedBlobs"`
}

func (m *migrator) copyBlobs(ctx context.Context) error {
	copied, failed := 0, 0
	cursor := ""
	for {
		var page struct {
			Cursor string `json:"cursor"`
			Blobs  []struct {
				CID string `json:"cid"`
			} `json:"blobs"`
		}
		q := url.Values{"limit": {"500"}}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		if err := m.target.call(ctx, "com.atproto.repo.listMissingBlobs", q, nil, &page); err != nil {
			return fmt.Errorf("list missing blobs: %w", err)
		}
		for _, b := range page.Blobs {
			if err := m.copyBlob(ctx, b.CID); err != nil {
				failed++
				fmt.Fprintf(m.e.Stderr, "  blob %s: %v\n", b.CID, err)
				continue
			}
			copied++
			if copied%50 == 0 {
				m.step("Copied %d blobs…", copied)
			}
		}
		if page.Cursor == "" || len(page.Blobs) == 0 {
			break
		}
		cursor = page.Cursor
	}
	var st accountStatus
	if err := m.target.call(ctx, "com.atproto.server.checkAccountStatus", nil, nil, &st); err != nil {
		return err
	}
	m.step("Copied %d blobs (%d of %d referenced blobs are here)", copied, st.ImportedBlobs, st.ExpectedBlobs)
	if failed > 0 {
		return fmt.Errorf("%d blobs could not be copied; run the command again to retry them", failed)
	}
	return nil
}

func (m *migrator) copyBlob(ctx context.Context, c string) error {
	resp, err := m.old.stream(ctx, http.MethodGet, "com.atproto.sync.getBlob", url.Values{"did": {m.did}, "cid": {c}}, nil, "")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	ct := resp.Header.Get("Content-Type")
	if ct == "" {
		ct = "application/octet-stream"
	}
	up, err := m.target.stream(ctx, http.MethodPost, "com.atproto.repo.uploadBlob", nil, resp.Body, ct)
	if err != nil {
		return err
	}
	up.Body.Close()
	return nil
}

func (m *migrator) copyPrefs(ctx context.Context) {
	var prefs struct {
		Preferences json.RawMessage `json:"preferences"`
	}
	if err := m.old.call(ctx, "app.bsky.actor.getPreferences", nil, nil, &prefs); err != nil {
		fmt.Fprintf(m.e.Stderr, "  preferences not copied: %v\n", err)
		return
	}
	if len(prefs.Preferences) == 0 {
		prefs.Preferences = json.RawMessage("[]")
	}
	if err := m.target.call(ctx, "app.bsky.actor.putPreferences", nil, map[string]json.RawMessage{"preferences": prefs.Preferences}, nil); err != nil {
		fmt.Fprintf(m.e.Stderr, "  preferences not copied: %v\n", err)
		return
	}
	m.step("Copied the preferences")
}

// credentials are this server's recommended DID credentials.
type credentials struct {
	RotationKeys        []string          `json:"rotationKeys"`
	AlsoKnownAs         []string          `json:"alsoKnownAs"`
	VerificationMethods map[string]string `json:"verificationMethods"`
	Services            map[string]struct {
		Type     string `json:"type"`
		Endpoint string `json:"endpoint"`
	} `json:"services"`
}

func (m *migrator) moveIdentity(ctx context.Context, cmd *cobra.Command) error {
	var creds credentials
	var raw json.RawMessage
	if err := m.target.call(ctx, "com.atproto.identity.getRecommendedDidCredentials", nil, nil, &raw); err != nil {
		return err
	}
	if err := json.Unmarshal(raw, &creds); err != nil {
		return err
	}
	endpoint := creds.Services["atproto_pds"].Endpoint
	key := creds.VerificationMethods["atproto"]
	if !strings.HasPrefix(m.did, "did:plc:") {
		if m.documentPointsHere(ctx, endpoint, key) {
			m.step("The DID document already points here")
			return nil
		}
		fmt.Fprintf(m.e.Stdout, "\nPublish this in the DID document of %s, then run the command again:\n", m.did)
		fmt.Fprintf(m.e.Stdout, "  service #atproto_pds (AtprotoPersonalDataServer): %s\n", endpoint)
		fmt.Fprintf(m.e.Stdout, "  verification method #atproto (Multikey): %s\n", strings.TrimPrefix(key, "did:key:"))
		return fmt.Errorf("waiting for the DID document of %s to name this server", m.did)
	}
	if m.documentPointsHere(ctx, endpoint, key) {
		m.step("The PLC identity already points here")
		return nil
	}
	if m.o.plcToken == "" {
		if err := m.old.call(ctx, "com.atproto.identity.requestPlcOperationSignature", nil, struct{}{}, nil); err != nil {
			return fmt.Errorf("ask the old PDS for a PLC token: %w", err)
		}
		m.step("The old PDS sent a PLC token (by email; on a Stratus: pds identity plc-token)")
		if !m.e.interactive() {
			return fmt.Errorf("run the command again with --plc-token TOKEN (or PDS_PLC_TOKEN)")
		}
		if err := runForm(cmd, m.e, huh.NewGroup(huh.NewInput().Title("PLC token from the old PDS").Value(&m.o.plcToken))); err != nil {
			return err
		}
	}
	in := map[string]any{"token": strings.TrimSpace(m.o.plcToken), "rotationKeys": creds.RotationKeys, "alsoKnownAs": creds.AlsoKnownAs,
		"verificationMethods": creds.VerificationMethods, "services": json.RawMessage(mustJSON(creds.Services))}
	var signed struct {
		Operation json.RawMessage `json:"operation"`
	}
	if err := m.old.call(ctx, "com.atproto.identity.signPlcOperation", nil, in, &signed); err != nil {
		return fmt.Errorf("the old PDS did not sign the PLC operation: %w", err)
	}
	if err := m.target.call(ctx, "com.atproto.identity.submitPlcOperation", nil, map[string]json.RawMessage{"operation": signed.Operation}, nil); err != nil {
		return fmt.Errorf("submit the PLC operation: %w", err)
	}
	m.step("Moved the identity: the PLC directory now names this server")
	return nil
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

// documentPointsHere reports whether the DID document already names this
// server's endpoint and key.
func (m *migrator) documentPointsHere(ctx context.Context, endpoint, key string) bool {
	u := strings.TrimRight(m.o.plcURL, "/") + "/" + m.did
	if host, ok := strings.CutPrefix(m.did, "did:web:"); ok {
		u = "https://" + strings.ReplaceAll(host, "%3A", ":") + "/.well-known/did.json"
	}
	c := newXRPCClient("")
	resp, err := c.get(ctx, u)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var doc struct {
		VerificationMethod []struct {
			ID                 string `json:"id"`
			PublicKeyMultibase string `json:"publicKeyMultibase"`
		} `json:"verificationMethod"`
		Service []struct {
			ID              string `json:"id"`
			ServiceEndpoint string `json:"serviceEndpoint"`
		} `json:"service"`
	}
	if json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&doc) != nil {
		return false
	}
	keyOK, svcOK := false, false
	for _, vm := range doc.VerificationMethod {
		keyOK = keyOK || strings.HasSuffix(vm.ID, "#atproto") && "did:key:"+vm.PublicKeyMultibase == key
	}
	for _, s := range doc.Service {
		svcOK = svcOK || strings.HasSuffix(s.ID, "#atproto_pds") && strings.TrimRight(s.ServiceEndpoint, "/") == strings.TrimRight(endpoint, "/")
	}
	return keyOK && svcOK
}

// xrpcClient talks to a PDS as an account (a bearer session token), with
// streamed bodies for repositories and blobs. Tokens never appear in
// errors.
type xrpcClient struct {
	base  string
	token string
	http  *http.Client
}

func newXRPCClient(base string) *xrpcClient {
	// No overall timeout: a repository or a video can take minutes. The
	// transport still bounds connecting and waiting for headers.
	tr := &http.Transport{Proxy: http.ProxyFromEnvironment, ResponseHeaderTimeout: 5 * time.Minute, TLSHandshakeTimeout: 15 * time.Second}
	return &xrpcClient{base: base, http: &http.Client{Transport: tr}}
}

func (c *xrpcClient) get(ctx context.Context, u string) (*http.Response, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		cancel()
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		cancel()
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		cancel()
		return nil, fmt.Errorf("%s: %s", u, resp.Status)
	}
	resp.Body = &cancelBody{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

// stream sends one request and returns the 200 response for the caller to
// read and close; any other status is returned as an error.
func (c *xrpcClient) stream(ctx context.Context, method, nsid string, q url.Values, body io.Reader, contentType string) (*http.Response, error) {
	u := c.base + "/xrpc/" + nsid
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("cannot reach %s: %v", c.base, err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		var xe struct {
			Error   string `json:"error"`
			Message string `json:"message"`
		}
		if json.Unmarshal(b, &xe) == nil && xe.Error != "" {
			return nil, &xrpcError{Status: resp.StatusCode, Name: xe.Error, Message: xe.Message}
		}
		return nil, fmt.Errorf("%s answered %s to %s", c.base, resp.Status, nsid)
	}
	return resp, nil
}

// call sends a JSON request (a POST when in is not nil) and decodes a JSON
// answer into out.
func (c *xrpcClient) call(ctx context.Context, nsid string, q url.Values, in, out any) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	method, ct := http.MethodGet, ""
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		method, ct, body = http.MethodPost, "application/json", bytes.NewReader(b)
	}
	resp, err := c.stream(ctx, method, nsid, q, body, ct)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return fmt.Errorf("read the answer of %s: %w", c.base, err)
	}
	if out != nil && len(bytes.TrimSpace(b)) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s answered %s with unexpected JSON: %v", c.base, nsid, err)
		}
	}
	return nil
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
