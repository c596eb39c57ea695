// Package backup takes online, consistent backups of a data directory and
// unpacks them into a new one.
//
// A backup holds a snapshot of the database made with VACUUM INTO (one
// read transaction, so the server keeps writing meanwhile), the settings
// and secrets files with their modes, the blobs the snapshot lists (under
// blobs/, in the disk store's layout) and a manifest. It is a directory or
// a .tar.gz of the same files. Every backup is checked with
// internal/integrity, blob bytes included, before it is declared good.
package backup

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"stratus/internal/blob"
	"stratus/internal/config"
	"stratus/internal/integrity"
	"stratus/internal/sqlite"
)

// ManifestFile describes a backup; it is informational.
const ManifestFile = "backup.json"

// Manifest records what a backup holds.
type Manifest struct {
	CreatedAt time.Time `json:"createdAt"`
	Version   string    `json:"version"`
	// Repos maps each DID to the commit and rev the backup holds.
	Repos map[string]RepoState `json:"repos"`
	// Seq is the firehose sequence counter at the snapshot.
	Seq int64 `json:"seq"`
	// Blobs and BlobBytes count the blobs the backup holds.
	Blobs     int   `json:"blobs"`
	BlobBytes int64 `json:"blobBytes"`
	// BlobsOmitted is set when the blobs were left out on request (their
	// store is backed up by other means).
	BlobsOmitted bool `json:"blobsOmitted,omitempty"`
	// Dropped lists unreferenced blobs that were collected while the
	// backup ran and so were left out of it (and out of its index).
	Dropped []string `json:"dropped,omitempty"`
}

// Options configure Create.
type Options struct {
	// Version is the server version recorded in the manifest.
	Version string
	// Keys verifies the snapshot's commits.
	Keys integrity.KeyFunc
	// Blobs is the server's blob store, from which the blobs the snapshot
	// lists are copied. When nil the backup holds no blob bytes.
	Blobs blob.Store

	// afterSnapshot runs between the snapshot and the blob copy (tests).
	afterSnapshot func()
}

// RepoState is one repository's state in a backup.
type RepoState struct {
	Commit string `json:"commit"`
	Rev    string `json:"rev"`
}

// files are the data directory files a backup carries, with the modes
// they must have.
var files = []struct {
	name string
	mode os.FileMode
}{
	{config.SettingsFile, 0o644},
	{config.SecretsFile, 0o600},
}

// IsArchive reports whether path names a .tar.gz backup.
func IsArchive(path string) bool {
	return strings.HasSuffix(path, ".tar.gz") || strings.HasSuffix(path, ".tgz")
}

// Create backs up dataDir to dest: a new or empty directory, or a
// .tar.gz file that must not exist.
func Create(ctx context.Context, dataDir, dest string, o Options) (*Manifest, error) {
	stage := dest
	if IsArchive(dest) {
		if _, err := os.Stat(dest); err == nil {
			return nil, fmt.Errorf("%s already exists", dest)
		}
		var err error
		if stage, err = os.MkdirTemp(filepath.Dir(dest), ".pds-backup-*"); err != nil {
			return nil, err
		}
		defer os.RemoveAll(stage)
	} else if err := emptyDir(dest); err != nil {
		return nil, err
	}
	m, err := fill(ctx, dataDir, stage, o)
	if err != nil {
		if !IsArchive(dest) {
			emptyOut(stage)
		}
		return nil, err
	}
	if IsArchive(dest) {
		if err := writeArchive(stage, dest); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// holdTTL is how long a backup's hold on blob collection lasts unless
// renewed; a backup renews it every third of that while it runs, so the
// hold of a backup that was killed lapses soon.
const holdTTL = 10 * time.Minute

// fill writes the backup's files into dir.
func fill(ctx context.Context, dataDir, dir string, o Options) (*Manifest, error) {
	live := filepath.Join(dataDir, config.DatabaseFile)
	// Hold blob collection before the snapshot: every blob the snapshot
	// lists is then still in the store when it is copied, even if the
	// record that referenced it is deleted meanwhile.
	if o.Blobs != nil {
		hold, err := sqlite.HoldBlobs(ctx, live, holdTTL)
		switch {
		case errors.Is(err, sqlite.ErrNoHolds):
			// No server of this version has opened the database; the copy
			// below still refuses to lose a referenced blob.
		case err != nil:
			return nil, err
		default:
			stop := renew(ctx, hold)
			defer func() {
				stop()
				hold.Release(context.WithoutCancel(ctx))
			}()
		}
	}
	// The snapshot first, then the files that go with it: a key rotation
	// in between would show up as a signature the check below refuses.
	db := filepath.Join(dir, config.DatabaseFile)
	if err := sqlite.SnapshotTo(ctx, live, db); err != nil {
		return nil, err
	}
	for _, f := range files {
		if err := copyFile(filepath.Join(dataDir, f.name), filepath.Join(dir, f.name), f.mode); err != nil {
			return nil, err
		}
	}
	if o.afterSnapshot != nil {
		o.afterSnapshot()
	}
	var (
		copied  copiedBlobs
		blobDir integrity.BlobStore
	)
	if o.Blobs != nil {
		var err error
		if copied, err = copyBlobs(ctx, db, o.Blobs, filepath.Join(dir, config.BlobsDir)); err != nil {
			return nil, err
		}
		blobDir = DirBlobs(filepath.Join(dir, config.BlobsDir))
	}
	m, err := Verify(ctx, dir, o.Keys, blobDir)
	if err != nil {
		return nil, err
	}
	m.CreatedAt = time.Now().UTC()
	m.Version = o.Version
	m.BlobBytes, m.Dropped, m.BlobsOmitted = copied.bytes, copied.dropped, o.Blobs == nil
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := writeFile(filepath.Join(dir, ManifestFile), append(b, '\n'), 0o644); err != nil {
		return nil, err
	}
	return m, syncDir(dir)
}

// Verify checks the database of a backup or data directory, and the bytes
// of its blobs in blobs unless that is nil, and describes it; any problem
// is an error.
func Verify(ctx context.Context, dir string, keys integrity.KeyFunc, blobs integrity.BlobStore) (*Manifest, error) {
	in, err := sqlite.Inspect(ctx, filepath.Join(dir, config.DatabaseFile), false)
	if err != nil {
		return nil, err
	}
	defer in.Close()
	rep, err := integrity.Check(ctx, in, keys, blobs)
	if err != nil {
		return nil, err
	}
	if !rep.OK() {
		return nil, fmt.Errorf("the snapshot fails its check:\n%s", rep.Summary())
	}
	m := &Manifest{Repos: map[string]RepoState{}, Seq: rep.Counter}
	for _, r := range rep.Repos {
		m.Repos[r.DID] = RepoState{Commit: r.Commit, Rev: r.Rev}
		m.Blobs += r.Blobs
	}
	return m, nil
}

// Unpack copies a backup (directory or .tar.gz) into dataDir, which must
// not exist or be empty. It needs the database, settings and secrets; the
// blobs go to dataDir's blobs/ (the disk store's place and layout), each
// checked against its CID as it is written.
func Unpack(src, dataDir string) error {
	if err := emptyDir(dataDir); err != nil {
		return err
	}
	var err error
	if IsArchive(src) {
		err = extract(src, dataDir)
	} else {
		err = copyBackupDir(src, dataDir)
	}
	if err == nil {
		for _, name := range []string{config.DatabaseFile, config.SettingsFile, config.SecretsFile} {
			if _, serr := os.Stat(filepath.Join(dataDir, name)); serr != nil {
				err = fmt.Errorf("the backup has no %s", name)
				break
			}
		}
	}
	if err == nil {
		err = syncDir(dataDir)
	}
	if err != nil {
		emptyOut(dataDir)
		return err
	}
	return nil
}

// emptyDir makes sure dir exists (mode 0700) and holds nothing.
func emptyDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return os.MkdirAll(dir, 0o700)
	}
	if err != nil {
		return err
	}
	if len(entries) > 0 {
		return fmt.Errorf("%s is not empty: refusing to write into it", dir)
	}
	return nil
}

// emptyOut removes what was written into a directory that was empty before.
func emptyOut(dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		os.RemoveAll(filepath.Join(dir, e.Name()))
	}
}

// wanted reports the mode a backup file is restored with, and whether the
// name belongs in a backup at all.
func wanted(name string) (os.FileMode, bool) {
	switch name {
	case config.DatabaseFile, config.SecretsFile:
		return 0o600, true
	case config.SettingsFile, ManifestFile:
		return 0o644, true
	}
	return 0, false
}

func copyBackupDir(src, dst string) error {
	entries, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	if err := copyBlobDir(filepath.Join(src, config.BlobsDir), filepath.Join(dst, config.BlobsDir)); err != nil {
		return err
	}
	for _, e := range entries {
		mode, ok := wanted(e.Name())
		if !ok || !e.Type().IsRegular() {
			continue
		}
		if err := copyFile(filepath.Join(src, e.Name()), filepath.Join(dst, e.Name()), mode); err != nil {
			return err
		}
	}
	return nil
}

// copyFile copies src to the new file dst with mode, fsynced.
func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	return writeFrom(dst, in, mode)
}

func writeFile(dst string, b []byte, mode os.FileMode) error {
	return writeFrom(dst, strings.NewReader(string(b)), mode)
}

// writeFrom creates dst with mode (never wider, even briefly) and fills it
// from r, fsynced.
func writeFrom(dst string, r io.Reader, mode os.FileMode) error {
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if err := out.Chmod(mode); err != nil {
		out.Close()
		return err
	}
	if _, err := io.Copy(out, r); err != nil {
		out.Close()
		return fmt.Errorf("write %s: %w", dst, err)
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// writeArchive writes the files of dir into the new .tar.gz dest (mode
// 0600: it holds the secrets), through a temporary file renamed at the end.
func writeArchive(dir, dest string) error {
	tmp := dest + ".partial"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	zw := gzip.NewWriter(f)
	tw := tar.NewWriter(zw)
	err = filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil || !e.Type().IsRegular() {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		return addToArchive(tw, path, filepath.ToSlash(rel))
	})
	if err != nil {
		f.Close()
		return err
	}
	err = tw.Close()
	if e := zw.Close(); err == nil {
		err = e
	}
	if e := f.Sync(); err == nil {
		err = e
	}
	if e := f.Close(); err == nil {
		err = e
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", dest, err)
	}
	return os.Rename(tmp, dest)
}

func addToArchive(tw *tar.Writer, path, name string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	hdr, err := tar.FileInfoHeader(st, "")
	if err != nil {
		return err
	}
	hdr.Name = name
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	_, err = io.Copy(tw, f)
	return err
}

// maxArchiveFile bounds one file extracted from an archive.
const maxArchiveFile = 1 << 40

// extract unpacks the known files of a .tar.gz backup into dir, and its
// blobs (blobs/<did>/<cid>, verified) into dir's blobs/; other entries
// (and any other path) are ignored.
func extract(src, dir string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return fmt.Errorf("%s is not a .tar.gz backup: %w", src, err)
	}
	tr := tar.NewReader(zr)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", src, err)
		}
		name := hdr.Name
		if rel, ok := strings.CutPrefix(name, config.BlobsDir+"/"); ok && hdr.Typeflag == tar.TypeReg {
			key, err := blob.ParseRelPath(rel)
			if err != nil {
				continue
			}
			if err := writeBlob(tr, key, hdr.Size, filepath.Join(dir, config.BlobsDir, filepath.FromSlash(blob.RelPath(key)))); err != nil {
				return err
			}
			continue
		}
		mode, ok := wanted(name)
		if !ok || hdr.Typeflag != tar.TypeReg || strings.ContainsAny(name, `/\`) {
			continue
		}
		if err := writeFrom(filepath.Join(dir, name), io.LimitReader(tr, maxArchiveFile), mode); err != nil {
			return err
		}
	}
}
