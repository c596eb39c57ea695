// Package scope parses atproto OAuth scope strings and answers whether a
// granted set of scopes allows an action. The grammar of each permission
// (repo:, blob:, rpc:, account:, identity:, include:) is indigo's; this
// package adds the transitional scopes, the rules for what each one
// allows, and plain-language descriptions for the consent page.
//
// Permission sets (include:<nsid>) are refused: resolving one means
// fetching a lexicon published under the NSID's authority over DNS and the
// network, which this server does not do. A client asking for one gets a
// clear invalid_scope error instead of a grant it did not expect.
package scope

import (
	"errors"
	"fmt"
	"mime"
	"sort"
	"strings"

	indigoauth "github.com/bluesky-social/indigo/atproto/auth"
)

// The scopes that are not permissions.
const (
	Atproto           = "atproto"
	TransitionGeneric = "transition:generic"
	TransitionEmail   = "transition:email"
	TransitionChat    = "transition:chat.bsky"
)

// MaxLength bounds a scope string; longer ones are refused before parsing.
const MaxLength = 4096

// Errors of Parse. They are wrapped with the offending scope.
var (
	ErrInvalid     = errors.New("invalid scope")
	ErrInclude     = errors.New("permission sets (include:) are not supported by this server")
	ErrNoAtproto   = errors.New(`scope must include "atproto"`)
	ErrOpenID      = errors.New(`the "openid" scope is not supported`)
	ErrTooLong     = errors.New("scope string too long")
	ErrDuplicate   = errors.New("duplicate scope")
	ErrUnsupported = errors.New("unsupported scope")
)

// Actions of repo permissions.
const (
	Create = "create"
	Update = "update"
	Delete = "delete"
)

// Set is a parsed, validated scope string.
type Set struct {
	tokens  []string // in the order given, deduplicated
	atproto bool
	generic bool
	email   bool
	chat    bool
	perms   []indigoauth.Permission
}

// Parse parses a space-separated scope string strictly: every token must be
// a known scope, and "atproto" must be present. include: permission sets
// are refused with ErrInclude.
func Parse(s string) (*Set, error) {
	if len(s) > MaxLength {
		return nil, ErrTooLong
	}
	set := &Set{}
	seen := map[string]bool{}
	for _, tok := range strings.Split(s, " ") {
		if tok == "" {
			continue
		}
		if seen[tok] {
			continue
		}
		seen[tok] = true
		switch tok {
		case Atproto:
			set.atproto = true
		case TransitionGeneric:
			set.generic = true
		case TransitionEmail:
			set.email = true
		case TransitionChat:
			set.chat = true
		case "openid":
			return nil, ErrOpenID
		default:
			if strings.HasPrefix(tok, "transition:") {
				return nil, fmt.Errorf("%w: %q", ErrUnsupported, tok)
			}
			p, err := indigoauth.ParsePermissionString(tok)
			if err != nil {
				return nil, fmt.Errorf("%w: %q", ErrInvalid, tok)
			}
			if p.Resource == "include" {
				return nil, fmt.Errorf("%w: %q", ErrInclude, tok)
			}
			set.perms = append(set.perms, *p)
		}
		set.tokens = append(set.tokens, tok)
	}
	if !set.atproto {
		return nil, ErrNoAtproto
	}
	return set, nil
}

// MustParse is Parse for scope strings known to be valid (stored grants,
// tests); it panics otherwise.
func MustParse(s string) *Set {
	set, err := Parse(s)
	if err != nil {
		panic(err)
	}
	return set
}

// String returns the scopes, space-separated, in the order given.
func (s *Set) String() string { return strings.Join(s.tokens, " ") }

// Tokens returns the individual scopes.
func (s *Set) Tokens() []string { return append([]string(nil), s.tokens...) }

// Has reports whether the exact scope token was granted.
func (s *Set) Has(tok string) bool {
	for _, t := range s.tokens {
		if t == tok {
			return true
		}
	}
	return false
}

// SubsetOf reports whether every scope of s is declared in other (by exact
// token), and returns the first one that is not.
func (s *Set) SubsetOf(other *Set) (string, bool) {
	for _, t := range s.tokens {
		if !other.Has(t) {
			return t, false
		}
	}
	return "", true
}

// AllowsRepo reports whether the scopes allow action (create, update or
// delete) on records of collection.
func (s *Set) AllowsRepo(collection, action string) bool {
	if s == nil {
		return false
	}
	if s.generic {
		return true
	}
	for _, p := range s.perms {
		if p.Resource != "repo" {
			continue
		}
		if !contains(p.Collection, "*") && !contains(p.Collection, collection) {
			continue
		}
		if len(p.Action) == 0 || contains(p.Action, action) {
			return true
		}
	}
	return false
}

// AllowsBlob reports whether the scopes allow uploading a blob of the MIME
// type mimeType.
func (s *Set) AllowsBlob(mimeType string) bool {
	if s == nil {
		return false
	}
	if s.generic {
		return true
	}
	mt, _, err := mime.ParseMediaType(mimeType)
	if err != nil {
		return false
	}
	mt = strings.ToLower(mt)
	typ, _, _ := strings.Cut(mt, "/")
	for _, p := range s.perms {
		if p.Resource != "blob" {
			continue
		}
		for _, a := range p.Accept {
			a = strings.ToLower(a)
			if a == "*/*" || a == mt || (strings.HasSuffix(a, "/*") && strings.TrimSuffix(a, "/*") == typ) {
				return true
			}
		}
	}
	return false
}

// AllowsRPC reports whether the scopes allow calling the method lxm at the
// service aud (a DID with a service fragment, e.g. did:web:api.bsky.app#bsky_appview).
// Method names are compared case-insensitively, so that a differently
// cased NSID cannot slip past the chat rule.
func (s *Set) AllowsRPC(lxm, aud string) bool {
	if s == nil {
		return false
	}
	isChat := strings.HasPrefix(strings.ToLower(lxm), "chat.bsky.")
	if s.generic && !isChat {
		return true
	}
	if s.generic && s.chat && isChat {
		return true
	}
	for _, p := range s.perms {
		if p.Resource != "rpc" {
			continue
		}
		if p.Audience != "*" && p.Audience != aud {
			continue
		}
		for _, e := range p.Endpoint {
			if e == "*" || strings.EqualFold(e, lxm) {
				return true
			}
		}
	}
	return false
}

// AllowsAccount reports whether the scopes allow action (read or manage)
// on the account attribute attr (email, repo).
func (s *Set) AllowsAccount(attr, action string) bool {
	if s == nil {
		return false
	}
	if attr == "email" && action == "read" && s.email {
		return true
	}
	for _, p := range s.perms {
		if p.Resource != "account" || p.Attribute != attr {
			continue
		}
		acts := p.Action
		if len(acts) == 0 {
			acts = []string{"read"}
		}
		if contains(acts, "manage") || contains(acts, action) {
			return true
		}
	}
	return false
}

// AllowsIdentity reports whether the scopes allow changing the identity
// attribute attr (handle, or * for the whole DID document).
func (s *Set) AllowsIdentity(attr string) bool {
	if s == nil {
		return false
	}
	for _, p := range s.perms {
		if p.Resource == "identity" && (p.Attribute == "*" || p.Attribute == attr) {
			return true
		}
	}
	return false
}

func contains(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

// Describe returns what the scopes allow, one plain sentence per item, for
// the consent page.
func (s *Set) Describe() []string {
	var out []string
	out = append(out, "Confirm which account you are (your DID and handle).")
	if s.generic {
		out = append(out, "Create, change and delete any record in your repository (posts, likes, follows, profile, ...), upload media, and call services on your behalf. It cannot change your handle, email or password, or read your direct messages.")
	}
	if s.chat {
		out = append(out, "Read and send your direct messages (chat).")
	}
	if s.email {
		out = append(out, "See your email address.")
	}
	for _, p := range s.perms {
		out = append(out, describe(p))
	}
	return out
}

func describe(p indigoauth.Permission) string {
	switch p.Resource {
	case "repo":
		acts := p.Action
		if len(acts) == 0 {
			acts = []string{Create, Update, Delete}
		}
		what := "records of type " + strings.Join(p.Collection, ", ")
		if contains(p.Collection, "*") {
			what = "any record"
		}
		return fmt.Sprintf("%s %s in your repository.", capitalize(joinWords(verbs(acts))), what)
	case "blob":
		if contains(p.Accept, "*/*") {
			return "Upload files of any type."
		}
		return "Upload files of type " + strings.Join(p.Accept, ", ") + "."
	case "rpc":
		aud := "any service"
		if p.Audience != "*" {
			aud = "the service " + p.Audience
		}
		if contains(p.Endpoint, "*") {
			return "Call any method of " + aud + " on your behalf."
		}
		return fmt.Sprintf("Call %s at %s on your behalf.", strings.Join(p.Endpoint, ", "), aud)
	case "account":
		acts := p.Action
		if contains(acts, "manage") {
			return fmt.Sprintf("See and change your account's %s.", attrWord(p.Attribute))
		}
		return fmt.Sprintf("See your account's %s.", attrWord(p.Attribute))
	case "identity":
		if p.Attribute == "*" {
			return "Change your identity (handle and DID document)."
		}
		return "Change your handle."
	}
	return "Access your account: " + p.ScopeString()
}

func attrWord(a string) string {
	if a == "repo" {
		return "repository (import and export)"
	}
	return a + " address"
}

func verbs(acts []string) []string {
	acts = append([]string(nil), acts...)
	sort.Slice(acts, func(i, j int) bool { return order(acts[i]) < order(acts[j]) })
	return acts
}

func order(a string) int {
	switch a {
	case Create:
		return 0
	case Update:
		return 1
	}
	return 2
}

func joinWords(w []string) string {
	switch len(w) {
	case 0:
		return ""
	case 1:
		return w[0]
	}
	return strings.Join(w[:len(w)-1], ", ") + " and " + w[len(w)-1]
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
