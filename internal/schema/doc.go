// Package schema holds the AT Protocol lexicons this PDS knows about and
// checks repository records against them before they are written.
//
// The lexicon JSON files under lexicons/ are a verbatim copy of the
// com/atproto, app/bsky and chat/bsky trees of the lexicons/ directory in
// the github.com/bluesky-social/indigo module pinned by go.mod. They are
// embedded rather than read at run time so the binary is self-contained and
// validates exactly the schemas it was tested with.
//
// Validation itself is delegated to indigo's atproto/lexicon package; this
// package only adds loading, record-key rules and error messages in the shape
// XRPC clients expect.
//
// # Refreshing the lexicons
//
// After bumping indigo in go.mod, run `go generate ./internal/schema/` and
// review the diff. The directive below replaces the three copied trees with
// the ones from whatever indigo version go.mod pins (located with `go list
// -m`, so no machine-specific path is involved) and makes the copies
// writable, since the module cache is read-only. It needs sh and tar.
// LICENSE-NOTICE.md is left alone. If a refreshed file no longer loads,
// Load fails and TestLoadAllFiles says which one; fix it or add it to
// excludedFiles with a reason.
//
//go:generate sh -c "rm -rf lexicons/com lexicons/app lexicons/chat && (cd \"$(go list -m -f '{{.Dir}}' github.com/bluesky-social/indigo)/lexicons\" && tar cf - com/atproto app/bsky chat/bsky) | tar xf - -C lexicons && chmod -R u+w lexicons"
package schema
