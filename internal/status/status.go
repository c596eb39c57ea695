// Package status defines the operator's status report: one document that
// describes a running (or stopped) server — the account and its
// repository, storage, the firehose, sessions, crawlers and identity —
// and names anything that needs the operator's attention. The server
// assembles it (app.stratus.admin.getStatus), `pds status` prints it and
// `pds dashboard` refreshes it; all three share these types.
package status

import (
	"bytes"
	"fmt"
	"strings"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
)

// Report is the status document.
type Report struct {
	// Version is the server's version.
	Version string `json:"version"`
	// Offline is true when the report was read from the data directory
	// because no server answered; serving fields (uptime, subscribers,
	// crawlers, activity) are then empty.
	Offline bool `json:"offline"`
	// Time is when the report was made.
	Time time.Time `json:"time"`
	// StartedAt is when the server started serving (nil offline).
	StartedAt *time.Time `json:"startedAt,omitempty"`
	// UptimeSeconds is how long it has served.
	UptimeSeconds int64  `json:"uptimeSeconds"`
	PublicURL     string `json:"publicUrl"`
	Hostname      string `json:"hostname"`
	// MetricsAddr is where /metrics is served (empty: off).
	MetricsAddr string `json:"metricsAddr,omitempty"`

	Account  Account   `json:"account"`
	Storage  Storage   `json:"storage"`
	Firehose Firehose  `json:"firehose"`
	Sessions Sessions  `json:"sessions"`
	Crawlers []Crawler `json:"crawlers"`
	Identity Identity  `json:"identity"`
	Activity Activity  `json:"activity"`
	// RecentEvents are the newest firehose events, newest first.
	RecentEvents []Event `json:"recentEvents"`

	// Problems need the operator's attention now: `pds status` exits 1
	// when there is any. Warnings are worth a look but not failures.
	Problems []string `json:"problems"`
	Warnings []string `json:"warnings"`
}

// Account describes the hosted account and its repository.
type Account struct {
	DID    string `json:"did"`
	Handle string `json:"handle"`
	// Status is active, deactivated or takendown.
	Status string `json:"status"`
	// Rev and Head are the current commit's revision and CID.
	Rev  string `json:"rev"`
	Head string `json:"head"`
	// LastCommitAt is the time of the current commit (from its rev).
	LastCommitAt *time.Time `json:"lastCommitAt,omitempty"`
	// Records counts every record; Collections per collection.
	Records     int64        `json:"records"`
	Collections []Collection `json:"collections"`
}

// Collection is the record count of one collection.
type Collection struct {
	Name    string `json:"name"`
	Records int64  `json:"records"`
}

// Storage describes the database and the blob store.
type Storage struct {
	DatabaseBytes int64 `json:"databaseBytes"`
	WALBytes      int64 `json:"walBytes"`
	// BlobStore is disk or s3.
	BlobStore         string `json:"blobStore"`
	Blobs             int64  `json:"blobs"`
	BlobBytes         int64  `json:"blobBytes"`
	UnreferencedBlobs int64  `json:"unreferencedBlobs"`
	MissingBlobs      int64  `json:"missingBlobs"`
}

// Firehose describes the event log and its subscribers.
type Firehose struct {
	LatestSeq int64 `json:"latestSeq"`
	// OldestSeq is the oldest event still retained for replay (0: none).
	OldestSeq        int64 `json:"oldestSeq"`
	Subscribers      int   `json:"subscribers"`
	RetentionSeconds int64 `json:"retentionSeconds"`
}

// Sessions counts the account's credentials in use.
type Sessions struct {
	// Active counts login sessions with a usable refresh token.
	Active       int64 `json:"active"`
	AppPasswords int64 `json:"appPasswords"`
	OAuthGrants  int64 `json:"oauthGrants"`
}

// Crawler is a relay asked to crawl this server.
type Crawler struct {
	URL string `json:"url"`
	// LastAskedAt is when it was last asked (nil: not since the start).
	LastAskedAt *time.Time `json:"lastAskedAt,omitempty"`
	// LastError is the failure of the last request ("" when it worked).
	LastError string `json:"lastError,omitempty"`
}

// Identity describes the account's DID and whether the DID document the
// world sees names the key that signs the repository.
type Identity struct {
	// Method is web or plc.
	Method string `json:"method"`
	// SigningKey is the did:key of the configured signing key.
	SigningKey string `json:"signingKey"`
	// DocumentKey is the did:key the DID document names ("" if unknown).
	DocumentKey string `json:"documentKey,omitempty"`
	// KeyMatches says whether they agree; nil when it could not be checked.
	KeyMatches *bool `json:"keyMatches,omitempty"`
	// Source says where DocumentKey came from.
	Source string `json:"source"`
}

// Activity counts what the running server did since it started.
type Activity struct {
	// Commits counts commits made since the start; the dashboard derives
	// writes per second from two reports.
	Commits int64 `json:"commits"`
	// Requests counts HTTP requests answered since the start.
	Requests int64 `json:"requests"`
}

// Event is one firehose event, summarised.
type Event struct {
	Seq  int64     `json:"seq"`
	Type string    `json:"type"`
	Time time.Time `json:"time"`
	// Detail is a one-line summary: the ops of a commit ("create
	// app.bsky.feed.post/3k..."), the handle of an identity event, the
	// status of an account event.
	Detail string `json:"detail,omitempty"`
}

// OK reports whether the report names no problem.
func (r *Report) OK() bool { return len(r.Problems) == 0 }

// Describe summarises a stored firehose event body (DAG-CBOR without its
// seq) in one line. A body that does not decode is described as such.
func Describe(typ string, payload []byte) string {
	r := bytes.NewReader(payload)
	switch typ {
	case "commit":
		var c comatproto.SyncSubscribeRepos_Commit
		if err := c.UnmarshalCBOR(r); err != nil {
			return "undecodable commit"
		}
		ops := make([]string, 0, len(c.Ops))
		for _, op := range c.Ops {
			ops = append(ops, op.Action+" "+op.Path)
		}
		if len(ops) == 0 {
			return "rev " + c.Rev
		}
		if len(ops) > 3 {
			ops = append(ops[:3], fmt.Sprintf("(+%d more)", len(ops)-3))
		}
		return strings.Join(ops, ", ")
	case "identity":
		var e comatproto.SyncSubscribeRepos_Identity
		if err := e.UnmarshalCBOR(r); err != nil {
			return "undecodable identity event"
		}
		if e.Handle != nil {
			return "handle " + *e.Handle
		}
		return "identity"
	case "account":
		var e comatproto.SyncSubscribeRepos_Account
		if err := e.UnmarshalCBOR(r); err != nil {
			return "undecodable account event"
		}
		if e.Active {
			return "active"
		}
		if e.Status != nil {
			return *e.Status
		}
		return "inactive"
	case "sync":
		var e comatproto.SyncSubscribeRepos_Sync
		if err := e.UnmarshalCBOR(r); err != nil {
			return "undecodable sync event"
		}
		return "rev " + e.Rev
	}
	return ""
}
