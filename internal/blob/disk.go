package blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"
)

// tempDirName is the directory inside a disk store's root where uploads
// are written before they are renamed into place. It starts with a dot, so
// it can never be taken for an account's directory.
const tempDirName = ".tmp"

// Disk is a Store in a local directory: <root>/<did>/<cid>, with the
// colons of the DID replaced by underscores (which a DID never contains)
// so the names are portable. Objects are written to a temporary file in the
// same filesystem, fsynced, renamed into place and the directory fsynced,
// so a blob either exists whole or not at all, even across a power loss.
type Disk struct {
	root string
}

var (
	_ Store     = (*Disk)(nil)
	_ FileMover = (*Disk)(nil)
)

// NewDisk opens (creating if needed) a disk store rooted at dir.
func NewDisk(dir string) (*Disk, error) {
	if err := os.MkdirAll(filepath.Join(dir, tempDirName), 0o700); err != nil {
		return nil, fmt.Errorf("create blob dir: %w", err)
	}
	return &Disk{root: dir}, nil
}

// TempDir implements FileMover.
func (d *Disk) TempDir() string { return filepath.Join(d.root, tempDirName) }

func (d *Disk) dir(did syntax.DID) string {
	return filepath.Join(d.root, strings.ReplaceAll(did.String(), ":", "_"))
}

func (d *Disk) path(k Key) string { return filepath.Join(d.dir(k.DID), k.CID.String()) }

// Put implements Store.
func (d *Disk) Put(ctx context.Context, key Key, r io.Reader, size int64) error {
	if _, err := os.Stat(d.path(key)); err == nil {
		return nil
	}
	f, err := os.CreateTemp(d.TempDir(), "put-*")
	if err != nil {
		return fmt.Errorf("put blob: %w", err)
	}
	defer os.Remove(f.Name())
	n, err := io.Copy(f, r)
	if err == nil && n != size {
		err = fmt.Errorf("read %d bytes, want %d", n, size)
	}
	if err != nil {
		f.Close()
		return fmt.Errorf("put blob %s: %w", key, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("put blob %s: %w", key, err)
	}
	return d.PutFile(ctx, key, f.Name())
}

// PutFile implements FileMover.
func (d *Disk) PutFile(_ context.Context, key Key, path string) error {
	defer os.Remove(path) // gone after a successful rename; cleanup otherwise
	dst := d.path(key)
	if _, err := os.Stat(dst); err == nil {
		return nil // content-addressed: the stored object has these bytes
	}
	if err := syncFile(path); err != nil {
		return fmt.Errorf("put blob %s: %w", key, err)
	}
	dir := d.dir(key.DID)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("put blob %s: %w", key, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		return fmt.Errorf("put blob %s: %w", key, err)
	}
	if err := os.Rename(path, dst); err != nil {
		return fmt.Errorf("put blob %s: %w", key, err)
	}
	// The rename is durable only once the directory entry is.
	if err := syncFile(dir); err != nil {
		return fmt.Errorf("put blob %s: %w", key, err)
	}
	return nil
}

func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Get implements Store.
func (d *Disk) Get(_ context.Context, key Key, offset, length int64) (io.ReadCloser, error) {
	f, err := os.Open(d.path(key))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("open blob %s: %w", key, err)
	}
	if offset > 0 {
		if _, err := f.Seek(offset, io.SeekStart); err != nil {
			f.Close()
			return nil, fmt.Errorf("seek blob %s: %w", key, err)
		}
	}
	if length < 0 {
		return f, nil
	}
	return limitedFile{Reader: io.LimitReader(f, length), Closer: f}, nil
}

type limitedFile struct {
	io.Reader
	io.Closer
}

// Stat implements Store.
func (d *Disk) Stat(_ context.Context, key Key) (int64, error) {
	fi, err := os.Stat(d.path(key))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, ErrNotFound
	}
	if err != nil {
		return 0, fmt.Errorf("stat blob %s: %w", key, err)
	}
	return fi.Size(), nil
}

// Delete implements Store.
func (d *Disk) Delete(_ context.Context, key Key) error {
	err := os.Remove(d.path(key))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete blob %s: %w", key, err)
	}
	return nil
}

// List implements Store.
func (d *Disk) List(ctx context.Context, fn func(Key, int64) error) error {
	accounts, err := os.ReadDir(d.root)
	if err != nil {
		return fmt.Errorf("list blobs: %w", err)
	}
	for _, a := range accounts {
		if !a.IsDir() || a.Name() == tempDirName {
			continue
		}
		did, err := syntax.ParseDID(strings.ReplaceAll(a.Name(), "_", ":"))
		if err != nil {
			continue
		}
		entries, err := os.ReadDir(filepath.Join(d.root, a.Name()))
		if err != nil {
			return fmt.Errorf("list blobs: %w", err)
		}
		for _, e := range entries {
			if err := ctx.Err(); err != nil {
				return err
			}
			c, err := cid.Decode(e.Name())
			if err != nil || !e.Type().IsRegular() {
				continue
			}
			info, err := e.Info()
			if err != nil {
				continue // removed while listing
			}
			if err := fn(Key{DID: did, CID: c}, info.Size()); err != nil {
				return err
			}
		}
	}
	return nil
}

// RelPath is where a disk store keeps key, relative to its root and with
// forward slashes: "<did with colons as underscores>/<cid>". Backups use
// the same layout under "blobs/".
func RelPath(k Key) string {
	return strings.ReplaceAll(k.DID.String(), ":", "_") + "/" + k.CID.String()
}

// ParseRelPath is the inverse of RelPath; it accepts only names a disk
// store could have written.
func ParseRelPath(rel string) (Key, error) {
	d, c, ok := strings.Cut(rel, "/")
	if !ok || strings.ContainsAny(c, `/\`) || strings.Contains(d, ":") || d == tempDirName {
		return Key{}, fmt.Errorf("blob path %q: want <did>/<cid>", rel)
	}
	did, err := syntax.ParseDID(strings.ReplaceAll(d, "_", ":"))
	if err != nil {
		return Key{}, fmt.Errorf("blob path %q: %w", rel, err)
	}
	cc, err := cid.Decode(c)
	if err != nil || cc.String() != c {
		return Key{}, fmt.Errorf("blob path %q: not a CID", rel)
	}
	return Key{DID: did, CID: cc}, nil
}
