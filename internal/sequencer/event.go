// Package sequencer defines the durable firehose events of
// com.atproto.sync.subscribeRepos. Events are encoded here and appended by
// the storage layer in the same transaction as the change they describe;
// the sequence number is assigned by the database on insert and spliced
// into the body when an event is read back.
package sequencer

import (
	"bytes"
	"fmt"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/syntax"
)

// Event types, as stored and as named in frame headers (with a leading #).
const (
	TypeCommit   = "commit"
	TypeSync     = "sync"
	TypeIdentity = "identity"
	TypeAccount  = "account"
)

// Event is an encoded event waiting for its sequence number.
type Event struct {
	Type    string
	Payload []byte // DAG-CBOR body with seq = 0
}

// Timestamp formats t the way event bodies carry time.
func Timestamp(t time.Time) string {
	return t.UTC().Format(syntax.AtprotoDatetimeLayout)
}

// Commit encodes a #commit body.
func Commit(c *comatproto.SyncSubscribeRepos_Commit) (Event, error) {
	// Sized for the blocks plus the other fields (a few hundred bytes for
	// each op), so the buffer is not grown and copied on every commit.
	buf := bytes.NewBuffer(make([]byte, 0, len(c.Blocks)+512+200*len(c.Ops)))
	if err := c.MarshalCBOR(buf); err != nil {
		return Event{}, fmt.Errorf("encode commit event: %w", err)
	}
	return Event{Type: TypeCommit, Payload: buf.Bytes()}, nil
}

// Sync encodes a #sync body: the repository's current commit, for consumers
// that need to resynchronise without a diff.
func Sync(did syntax.DID, rev syntax.TID, commitCAR []byte, at time.Time) (Event, error) {
	e := comatproto.SyncSubscribeRepos_Sync{Did: did.String(), Rev: rev.String(), Blocks: commitCAR, Time: Timestamp(at)}
	var buf bytes.Buffer
	if err := e.MarshalCBOR(&buf); err != nil {
		return Event{}, fmt.Errorf("encode sync event: %w", err)
	}
	return Event{Type: TypeSync, Payload: buf.Bytes()}, nil
}

// Identity encodes an #identity body. handle may be empty.
func Identity(did syntax.DID, handle string, at time.Time) (Event, error) {
	e := comatproto.SyncSubscribeRepos_Identity{Did: did.String(), Time: Timestamp(at)}
	if handle != "" {
		e.Handle = &handle
	}
	var buf bytes.Buffer
	if err := e.MarshalCBOR(&buf); err != nil {
		return Event{}, fmt.Errorf("encode identity event: %w", err)
	}
	return Event{Type: TypeIdentity, Payload: buf.Bytes()}, nil
}

// Account encodes an #account body; status is empty for an active account.
func Account(did syntax.DID, active bool, status string, at time.Time) (Event, error) {
	e := comatproto.SyncSubscribeRepos_Account{Did: did.String(), Active: active, Time: Timestamp(at)}
	if status != "" {
		e.Status = &status
	}
	var buf bytes.Buffer
	if err := e.MarshalCBOR(&buf); err != nil {
		return Event{}, fmt.Errorf("encode account event: %w", err)
	}
	return Event{Type: TypeAccount, Payload: buf.Bytes()}, nil
}
