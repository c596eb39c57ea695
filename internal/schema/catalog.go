package schema

import (
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"github.com/bluesky-social/indigo/atproto/lexicon"
	"github.com/bluesky-social/indigo/atproto/syntax"
)

// lexiconFS holds the copied lexicon tree. Embedding (rather than reading
// from disk) keeps the binary self-contained and pins the schemas to the ones
// the tests ran against.
//
//go:embed lexicons
var lexiconFS embed.FS

// lexiconRoot is the directory inside lexiconFS that holds the schema tree.
const lexiconRoot = "lexicons"

// excludedFiles lists embedded lexicon files (paths relative to lexiconRoot)
// that are deliberately not loaded, each with the reason. It is empty: every
// copied file currently loads in indigo's catalog. It exists so that a future
// refresh which brings in a file indigo cannot parse is handled by a visible,
// reviewed exclusion instead of a silent skip; TestExcludedFiles pins its
// contents, so adding an entry forces the test to be updated too.
var excludedFiles = map[string]string{}

// ErrUnknownSchema is wrapped by ValidateRecord when the collection has no
// record lexicon. Callers that accept records of unknown types when
// validation is optional (as the PDS does for validate=unset) match it with
// errors.Is; the wrapping error's text is "Unknown lexicon type: <nsid>",
// which is what XRPC clients expect to see.
var ErrUnknownSchema = errors.New("unknown lexicon type")

// Catalog holds the embedded lexicons and validates records against them.
// It is read-only after Load returns, so it is safe for concurrent use;
// building one parses every schema file, so build it once and share it.
type Catalog struct {
	// base resolves schema references during validation.
	base *lexicon.BaseCatalog
	// keyRules maps each record-type NSID to its record-key rule. It doubles
	// as the "is this a record?" index, so HasRecord and KeyRule need no
	// type assertions on indigo's schema values.
	keyRules map[syntax.NSID]string
	// files lists the loaded files (relative to the lexicon root) so tests
	// can prove nothing was skipped.
	files []string
}

// Load builds a Catalog from the embedded lexicons. It fails if any
// non-excluded schema file fails to parse or check, because a silently
// missing schema would later show up as records being accepted unvalidated
// or rejected as unknown.
func Load() (*Catalog, error) {
	return loadFS(lexiconFS, lexiconRoot)
}

// loadFS loads every .json file under root in fsys. It walks the tree itself
// instead of calling indigo's LoadEmbedFS because that function always
// walks from the FS root, accepts only embed.FS (so no fs.Sub and no test
// fixtures), and returns errors that do not name the failing file; walking
// here also lets us honour excludedFiles and record which files loaded.
func loadFS(fsys fs.FS, root string) (*Catalog, error) {
	c := &Catalog{
		base:     lexicon.NewBaseCatalog(),
		keyRules: make(map[syntax.NSID]string),
	}
	err := fs.WalkDir(fsys, root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !strings.HasSuffix(p, ".json") {
			return nil
		}
		rel := strings.TrimPrefix(p, root+"/")
		if _, skip := excludedFiles[rel]; skip {
			return nil
		}
		b, err := fs.ReadFile(fsys, p)
		if err != nil {
			return fmt.Errorf("schema: reading lexicon %s: %w", rel, err)
		}
		if err := c.addFile(rel, b); err != nil {
			return fmt.Errorf("schema: loading lexicon %s: %w", rel, err)
		}
		c.files = append(c.files, rel)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(c.files) == 0 {
		// An empty catalog would make every record "unknown"; that is a
		// packaging mistake, not a valid configuration.
		return nil, fmt.Errorf("schema: no lexicon files found under %s", root)
	}
	return c, nil
}

// addFile parses one schema file and adds it to the catalog.
func (c *Catalog) addFile(rel string, b []byte) error {
	var sf lexicon.SchemaFile
	if err := json.Unmarshal(b, &sf); err != nil {
		return err
	}
	// The tree layout mirrors the NSID; a mismatch means a file was copied
	// to the wrong place, which would make refreshes and reviews misleading.
	if want := strings.ReplaceAll(strings.TrimSuffix(rel, ".json"), "/", "."); sf.ID != want {
		return fmt.Errorf("lexicon id %q does not match its path (want %q)", sf.ID, want)
	}
	// AddSchemaFile runs FinishParse and CheckSchema, so everything that
	// reaches the catalog has passed indigo's schema checks.
	if err := c.base.AddSchemaFile(sf); err != nil {
		return err
	}
	if def, ok := sf.Defs["main"]; ok {
		if rec, ok := def.Inner.(lexicon.SchemaRecord); ok {
			c.keyRules[syntax.NSID(sf.ID)] = rec.Key
		}
	}
	return nil
}

// HasRecord reports whether a lexicon of type "record" exists for
// collection. Queries, procedures and plain defs return false, because only
// records can be stored in a repository.
func (c *Catalog) HasRecord(collection syntax.NSID) bool {
	_, ok := c.keyRules[collection]
	return ok
}

// KeyRule returns the record-key rule of the collection's record schema
// ("tid", "nsid", "any", "literal:self", ...); ok is false if the collection
// has no record schema. Callers use it, for example, to decide whether to
// mint a TID when a client omits the rkey.
func (c *Catalog) KeyRule(collection syntax.NSID) (rule string, ok bool) {
	rule, ok = c.keyRules[collection]
	return rule, ok
}

// CheckRecordKey verifies rkey against the collection's key rule: "tid" must
// parse as syntax.TID, "nsid" as syntax.NSID, "literal:X" must equal X and
// "any" accepts any valid record key. Collections without a record schema
// get no extra rule. The general record-key syntax is checked in every case,
// because a syntax.RecordKey can be made by plain conversion without
// parsing. Errors read like
// `Invalid record key for app.bsky.actor.profile: must be "self"`.
func (c *Catalog) CheckRecordKey(collection syntax.NSID, rkey syntax.RecordKey) error {
	raw := rkey.String()
	if _, err := syntax.ParseRecordKey(raw); err != nil {
		return &recordKeyError{collection: collection, reason: "not a valid record key"}
	}
	rule, ok := c.keyRules[collection]
	if !ok {
		return nil
	}
	switch {
	case rule == "any":
		return nil
	case rule == "tid":
		if _, err := syntax.ParseTID(raw); err != nil {
			return &recordKeyError{collection: collection, reason: "must be a TID"}
		}
		return nil
	case rule == "nsid":
		if _, err := syntax.ParseNSID(raw); err != nil {
			return &recordKeyError{collection: collection, reason: "must be an NSID"}
		}
		return nil
	case strings.HasPrefix(rule, "literal:"):
		if want := strings.TrimPrefix(rule, "literal:"); raw != want {
			return &recordKeyError{collection: collection, reason: fmt.Sprintf("must be %q", want)}
		}
		return nil
	default:
		// indigo's CheckSchema only admits the rules above, so this is only
		// reachable if a newer indigo adds a rule we do not know. Refusing is
		// safer than letting arbitrary keys through.
		return &recordKeyError{collection: collection, reason: fmt.Sprintf("unsupported key rule %q", rule)}
	}
}

// ValidateRecord validates rec (the map form produced by indigo's
// atdata.UnmarshalJSON or atdata.UnmarshalCBOR) against the record schema
// for collection, in indigo's strict mode (no legacy blobs, strict
// datetimes).
//
// It returns an error wrapping ErrUnknownSchema when the collection has no
// record schema. Any other error is a validation failure whose message starts
// with "Invalid <collection> record: ".
//
// If rec has no "$type", it is validated as if "$type" were collection (the
// reference PDS fills it in the same way); rec is never modified, so a caller
// that stores the record must set "$type" itself. A "$type" that is present
// but differs from collection is rejected.
func (c *Catalog) ValidateRecord(collection syntax.NSID, rec map[string]any) error {
	if _, ok := c.keyRules[collection]; !ok {
		return &unknownSchemaError{collection: collection}
	}
	nsid := collection.String()
	if t, ok := rec["$type"]; !ok {
		// indigo insists on a matching $type; validate a shallow copy so the
		// caller's map is left as it was.
		withType := make(map[string]any, len(rec)+1)
		for k, v := range rec {
			withType[k] = v
		}
		withType["$type"] = nsid
		rec = withType
	} else if s, isString := t.(string); !isString {
		return &invalidRecordError{collection: collection, err: fmt.Errorf("$type must be a string, got %T", t)}
	} else if s != nsid {
		return &invalidRecordError{collection: collection, err: fmt.Errorf("$type must be %q, got %q", nsid, s)}
	}
	if err := lexicon.ValidateRecord(c.base, rec, nsid, 0); err != nil {
		return &invalidRecordError{collection: collection, err: err}
	}
	return nil
}

// unknownSchemaError carries the NSID so the message can name it while
// errors.Is still matches ErrUnknownSchema.
type unknownSchemaError struct {
	collection syntax.NSID
}

func (e *unknownSchemaError) Error() string {
	return "Unknown lexicon type: " + e.collection.String()
}

func (e *unknownSchemaError) Unwrap() error { return ErrUnknownSchema }

// invalidRecordError prefixes indigo's terse validation message with the
// collection, matching the reference PDS wording, and keeps the original
// error reachable through errors.Unwrap.
type invalidRecordError struct {
	collection syntax.NSID
	err        error
}

func (e *invalidRecordError) Error() string {
	return "Invalid " + e.collection.String() + " record: " + e.err.Error()
}

func (e *invalidRecordError) Unwrap() error { return e.err }

// recordKeyError names the collection and the violated rule.
type recordKeyError struct {
	collection syntax.NSID
	reason     string
}

func (e *recordKeyError) Error() string {
	return "Invalid record key for " + e.collection.String() + ": " + e.reason
}
