package integrity

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/ipfs/go-cid"
)

// Fixer is a Store that can also change what a repair derives. All
// changes belong to one transaction that the caller commits.
type Fixer interface {
	Store
	PutRecord(ctx context.Context, did, collection, rkey string, cid []byte, rev string) error
	DeleteRecord(ctx context.Context, did, collection, rkey string) error
	PutBlock(ctx context.Context, did string, cid []byte, rev string, data []byte) error
	DeleteBlock(ctx context.Context, did string, cid []byte) error
	DeleteSessionOrphans(ctx context.Context, until time.Time) (int64, error)
	PutBlobRef(ctx context.Context, did, collection, rkey, cid, rev string) error
	DeleteBlobRef(ctx context.Context, did, collection, rkey, cid string) error
	DeleteBlobRow(ctx context.Context, did, cid string) error
	MarkBlobs(ctx context.Context, did string, nowMillis int64) (int64, error)
}

// sessionLifetime bounds how long an access token of an ended session
// could still be presented; the longest-lived access token is 2 hours.
const sessionLifetime = 3 * time.Hour

// Repair checks st and fixes what can be derived without touching signed
// data:
//
//   - the record index, from the current index corrected by the record
//     changes of the retained firehose log, accepted only if the tree it
//     gives has exactly the root the signed commit names;
//   - missing or damaged commit and record blocks, from the blocks the
//     retained firehose events carry (each checked against its CID);
//   - stray blocks (neither the commit nor an indexed record), once the
//     index is proven right;
//   - refresh tokens left behind by an interrupted app-password
//     revocation, whose sessions are ended;
//   - the blob reference index, from the blobs the record blocks
//     reference (indigo's atdata.ExtractBlobs), and the referenced marks
//     the collector goes by; with blobs given, recorded blobs that no
//     record references and the store no longer has are forgotten. A
//     referenced blob missing from the store cannot be derived: the check
//     names it, to be restored from a backup.
//
// It returns the report of the check it ran first, with Repaired listing
// the changes and Problems only what it could not fix. The caller commits
// the Fixer's transaction and should check again.
func Repair(ctx context.Context, st Fixer, keys KeyFunc, blobs BlobStore) (*Report, error) {
	r := &Report{}
	lines, err := st.IntegrityCheck(ctx)
	if err != nil {
		r.add("database", "integrity_check failed: %v", err)
	}
	for _, l := range lines {
		r.add("database", "%s (not repairable here: restore the database from a backup)", l)
	}
	accounts, err := st.Accounts(ctx)
	if err != nil {
		return nil, fmt.Errorf("read accounts: %w", err)
	}
	for _, a := range accounts {
		scratch := &Report{}
		s := checkRepo(ctx, st, keys, a, scratch)
		r.Repos = append(r.Repos, scratch.Repos...)
		if !scratch.OK() {
			if err := repairRepo(ctx, st, s, r); err != nil {
				return nil, err
			}
			// Blob references are derived from the records: only from a
			// repository that now checks out.
			scratch = &Report{}
			if s = checkRepo(ctx, st, keys, a, scratch); !scratch.OK() {
				r.add(a.DID, "blob references not rebuilt: the repository is still damaged")
				continue
			}
		}
		if !s.hasHead {
			continue
		}
		if err := repairBlobs(ctx, st, blobs, s, r, time.Now().UnixMilli()); err != nil {
			return nil, err
		}
	}
	n, err := st.DeleteSessionOrphans(ctx, time.Now().Add(sessionLifetime))
	if err != nil {
		return nil, fmt.Errorf("repair sessions: %w", err)
	}
	if n > 0 {
		r.Repaired = append(r.Repaired, fmt.Sprintf("deleted %d refresh token(s) of revoked app passwords and ended their sessions", n))
	}
	return r, nil
}

func repairRepo(ctx context.Context, st Fixer, s *repoState, r *Report) error {
	did := s.did
	if !s.hasHead || !s.commit.Defined() || !s.data.Defined() {
		r.add(did, "the repository root is missing or unreadable; nothing can be derived without it: restore from a backup")
		return nil
	}
	log, err := readLog(ctx, st, did, s.head.Rev)
	if err != nil {
		r.add(did, "cannot read the firehose log: %v", err)
	}
	if log == nil {
		log = &logEvidence{blocks: map[string][]byte{}}
	}

	// The commit block, from a #commit or #sync event that carried it.
	if !s.commitOK {
		if _, present := s.blocks[string(s.head.Commit)]; !present || !s.blocks[string(s.head.Commit)].hashOK {
			data, ok := log.blocks[string(s.head.Commit)]
			if !ok {
				r.add(did, "commit block %s is missing or damaged and no retained firehose event carries it: restore from a backup", s.commit)
				return nil
			}
			if present {
				if err := st.DeleteBlock(ctx, did, s.head.Commit); err != nil {
					return err
				}
			}
			if err := st.PutBlock(ctx, did, s.head.Commit, s.head.Rev, data); err != nil {
				return err
			}
			s.blocks[string(s.head.Commit)] = blockRow{rev: s.head.Rev, hashOK: true}
			r.Repaired = append(r.Repaired, fmt.Sprintf("%s: restored commit block %s from the firehose log", did, s.commit))
		} else {
			r.add(did, "commit %s is inconsistent with the repository root row; a signed commit cannot be repaired: restore from a backup", s.commit)
			return nil
		}
	}

	// The index: the stored rows, corrected by every change the log
	// records. For a key the log touches, its last change is the current
	// value; the others keep their row. Accept only the signed root.
	want := map[string]indexRow{}
	for k, v := range s.index {
		want[k] = v
	}
	for _, ch := range log.changes {
		if ch.cid == nil {
			delete(want, ch.key)
		} else {
			want[ch.key] = indexRow{cid: *ch.cid, rev: ch.rev}
		}
	}
	root, err := rootOf(want)
	if err != nil || !root.Equals(s.data) {
		r.add(did, "the record index cannot be rebuilt to match the signed commit's data root %s (the retained firehose log does not cover the damage): restore from a backup", s.data)
		return nil
	}
	var fixedIndex []string
	for _, key := range s.badRows {
		coll, rkey, _ := strings.Cut(key, "/")
		if err := st.DeleteRecord(ctx, did, coll, rkey); err != nil {
			return err
		}
		fixedIndex = append(fixedIndex, key)
	}
	for key, row := range s.index {
		if _, ok := want[key]; !ok {
			coll, rkey, _ := strings.Cut(key, "/")
			if err := st.DeleteRecord(ctx, did, coll, rkey); err != nil {
				return err
			}
			fixedIndex = append(fixedIndex, key+" (removed, was "+row.cid.String()+")")
		}
	}
	for key, row := range want {
		if old, ok := s.index[key]; ok && old.cid.Equals(row.cid) {
			continue
		}
		coll, rkey, _ := strings.Cut(key, "/")
		if err := st.PutRecord(ctx, did, coll, rkey, row.cid.Bytes(), row.rev); err != nil {
			return err
		}
		fixedIndex = append(fixedIndex, key+" -> "+row.cid.String())
	}
	sort.Strings(fixedIndex)
	for _, f := range fixedIndex {
		r.Repaired = append(r.Repaired, fmt.Sprintf("%s: record index %s", did, f))
	}

	// Record blocks: every indexed record needs its block.
	referenced := map[string]bool{string(s.head.Commit): true}
	var missing []string
	for key, row := range want {
		cb := string(row.cid.Bytes())
		referenced[cb] = true
		b, present := s.blocks[cb]
		if present && b.hashOK {
			continue
		}
		data, ok := log.blocks[cb]
		if !ok {
			missing = append(missing, fmt.Sprintf("record %s: block %s is missing or damaged and no retained firehose event carries it: restore from a backup", key, row.cid))
			continue
		}
		if present {
			if err := st.DeleteBlock(ctx, did, row.cid.Bytes()); err != nil {
				return err
			}
		}
		if err := st.PutBlock(ctx, did, row.cid.Bytes(), row.rev, data); err != nil {
			return err
		}
		s.blocks[cb] = blockRow{rev: row.rev, hashOK: true}
		r.Repaired = append(r.Repaired, fmt.Sprintf("%s: restored block %s of %s from the firehose log", did, row.cid, key))
	}
	sort.Strings(missing)
	for _, m := range missing {
		r.add(did, "%s", m)
	}

	// Stray blocks go only once the index is proven to be the signed one.
	var strays []string
	for cb := range s.blocks {
		if referenced[cb] {
			continue
		}
		if err := st.DeleteBlock(ctx, did, []byte(cb)); err != nil {
			return err
		}
		c, _ := cid.Cast([]byte(cb))
		strays = append(strays, c.String())
	}
	sort.Strings(strays)
	for _, c := range strays {
		r.Repaired = append(r.Repaired, fmt.Sprintf("%s: deleted stray block %s", did, c))
	}
	return nil
}
