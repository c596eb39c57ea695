// Package prefs keeps an account's private preferences
// (app.bsky.actor.getPreferences / putPreferences): an ordered list of
// typed JSON objects stored on this server, never in the public
// repository.
//
// As in the reference implementation, a put replaces every stored
// preference of the app.bsky namespace the caller may see; personal
// details (birth date) are visible and writable only with a full session,
// so an app password can neither read nor erase them; and the derived
// declaredAgePref is computed on read, never stored.
package prefs

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"stratus/internal/pdserr"
)

// Namespace is the only namespace of preferences served here.
const Namespace = "app.bsky"

// Preference types with special rules.
const (
	TypePersonalDetails = "app.bsky.actor.defs#personalDetailsPref"
	TypeDeclaredAge     = "app.bsky.actor.defs#declaredAgePref"
)

// MaxCount bounds how many preferences one put may store.
const MaxCount = 500

// Pref is one stored preference: its $type and its JSON object.
type Pref struct {
	Type  string
	Value json.RawMessage
}

// Store persists preferences. Implementations must be safe for concurrent
// use.
type Store interface {
	// Preferences returns did's preferences in the order they were put.
	Preferences(ctx context.Context, did syntax.DID) ([]Pref, error)
	// ReplacePreferences deletes did's stored preferences for which drop
	// returns true and appends add, in one transaction.
	ReplacePreferences(ctx context.Context, did syntax.DID, drop func(typ string) bool, add []Pref) error
	// CountPreferences counts did's stored preferences.
	CountPreferences(ctx context.Context, did syntax.DID) (int64, error)
}

// Service reads and writes preferences.
type Service struct {
	store Store
	now   func() time.Time
}

// NewService returns the preference service.
func NewService(store Store, now func() time.Time) *Service {
	if now == nil {
		now = time.Now
	}
	return &Service{store: store, now: now}
}

// inNamespace reports whether a $type belongs to the app.bsky namespace.
func inNamespace(typ string) bool {
	return typ == Namespace || strings.HasPrefix(typ, Namespace+".")
}

// allowed reports whether a caller (full session or not) may see and set
// a preference type.
func allowed(typ string, full bool) bool { return full || typ != TypePersonalDetails }

// Get returns did's preferences as JSON objects, with declaredAgePref
// derived from a stored birth date, leaving out what the caller may not
// see.
func (s *Service) Get(ctx context.Context, did syntax.DID, full bool) ([]json.RawMessage, error) {
	stored, err := s.store.Preferences(ctx, did)
	if err != nil {
		return nil, fmt.Errorf("read preferences: %w", err)
	}
	out := make([]json.RawMessage, 0, len(stored)+1)
	var birth string
	for _, p := range stored {
		if !inNamespace(p.Type) {
			continue
		}
		if p.Type == TypePersonalDetails && birth == "" {
			var pd struct {
				BirthDate string `json:"birthDate"`
			}
			if json.Unmarshal(p.Value, &pd) == nil {
				birth = pd.BirthDate
			}
		}
		if allowed(p.Type, full) {
			out = append(out, p.Value)
		}
	}
	if birth != "" {
		if age, ok := ageOn(birth, s.now()); ok {
			b, _ := json.Marshal(map[string]any{
				"$type":       TypeDeclaredAge,
				"isOverAge13": age >= 13,
				"isOverAge16": age >= 16,
				"isOverAge18": age >= 18,
			})
			out = append(out, b)
		}
	}
	return out, nil
}

// Count returns how many preferences did has stored.
func (s *Service) Count(ctx context.Context, did syntax.DID) (int64, error) {
	return s.store.CountPreferences(ctx, did)
}

// Put replaces did's app.bsky preferences with prefs. Every preference
// must be a JSON object with a $type in the app.bsky namespace; callers
// without a full session may not set personal details, and keep the
// stored ones.
func (s *Service) Put(ctx context.Context, did syntax.DID, prefs []json.RawMessage, full bool) error {
	if len(prefs) > MaxCount {
		return pdserr.New(pdserr.InvalidRequest, "Too many preferences (at most %d)", MaxCount)
	}
	add := make([]Pref, 0, len(prefs))
	var forbidden []string
	for i, raw := range prefs {
		typ, err := prefType(raw)
		if err != nil {
			return pdserr.New(pdserr.InvalidRequest, "Input/preferences/%d %s", i, err.Error())
		}
		if !inNamespace(typ) {
			return pdserr.New(pdserr.InvalidRequest, "Some preferences are not in the %s namespace", Namespace)
		}
		if !allowed(typ, full) {
			forbidden = append(forbidden, typ)
			continue
		}
		if typ == TypeDeclaredAge {
			continue // derived on read
		}
		var compact bytes.Buffer
		if err := json.Compact(&compact, raw); err != nil {
			return pdserr.New(pdserr.InvalidRequest, "Input/preferences/%d must be an object", i)
		}
		add = append(add, Pref{Type: typ, Value: compact.Bytes()})
	}
	if len(forbidden) > 0 {
		return pdserr.New(pdserr.InvalidRequest, "Do not have authorization to set preferences: %s", strings.Join(forbidden, ", "))
	}
	drop := func(typ string) bool { return inNamespace(typ) && allowed(typ, full) }
	if err := s.store.ReplacePreferences(ctx, did, drop, add); err != nil {
		return fmt.Errorf("write preferences: %w", err)
	}
	return nil
}

// prefType checks that raw is a JSON object with a string $type naming a
// lexicon definition (an NSID with an optional #fragment).
func prefType(raw json.RawMessage) (string, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		return "", fmt.Errorf("must be an object")
	}
	t, ok := obj["$type"]
	if !ok {
		return "", fmt.Errorf("is missing a $type")
	}
	var typ string
	if err := json.Unmarshal(t, &typ); err != nil {
		return "", fmt.Errorf("$type must be a string")
	}
	nsid, frag, _ := strings.Cut(typ, "#")
	if _, err := syntax.ParseNSID(nsid); err != nil || strings.Contains(frag, "#") {
		return "", fmt.Errorf("$type must name a lexicon definition, got %q", typ)
	}
	return typ, nil
}

// ageOn returns the age in whole years on day now of someone born on
// birth (an atproto datetime or a plain date).
func ageOn(birth string, now time.Time) (int, bool) {
	var b time.Time
	var err error
	if b, err = time.Parse(time.RFC3339Nano, birth); err != nil {
		if b, err = time.Parse("2006-01-02", birth); err != nil {
			return 0, false
		}
	}
	b, now = b.UTC(), now.UTC()
	age := now.Year() - b.Year()
	if now.Month() < b.Month() || (now.Month() == b.Month() && now.Day() < b.Day()) {
		age--
	}
	return age, true
}
