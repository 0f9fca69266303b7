package zfs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/shoal-dev/shoal/storage"
)

// Config configures a ZFS driver.
type Config struct {
	// Path is the directory the volumes are mounted beneath (the root
	// dataset's mountpoint). The driver owns everything beneath it.
	Path string
	// Pool is the zpool's name. When it is not imported, New imports it
	// from Device or File, or else creates it there.
	Pool string
	// Dataset is the driver's root dataset, inside Pool (Pool+"/shoal"
	// when ""); several drivers may share a pool with datasets of their
	// own. It must leave room for the volume and snapshot names: at most
	// maxRootLen bytes.
	Dataset string
	// Device is a block device for a new pool (it must hold no
	// filesystem: zpool create is not forced).
	Device string
	// File is a file for a new pool's only vdev, created sparse with
	// FileSize bytes when missing, when Device is "".
	File string
	// FileSize is the size of a new File (at least 64 MiB).
	FileSize int64
	// Compression is the root dataset's compression property when New
	// creates it ("" inherits the pool's). Note that with compression on,
	// blocks of zeros take no space and so count against no quota.
	Compression string
}

// maxRootLen bounds the root dataset's name, so that the longest name of
// a snapshot under it (root + "/volumes/" + component + "@" + component)
// stays below ZFS's 256 bytes.
const maxRootLen = 255 - len("/volumes/") - 2*maxComponent - 1

// Driver is the ZFS storage.Driver. It is safe for concurrent use: calls
// are serialized.
type Driver struct {
	mu      sync.Mutex
	root    string // Config.Path
	pool    string
	ds      string // the root dataset
	ownPool bool   // Config named a Device or File: Destroy may destroy the pool
	file    string
}

var (
	_ storage.Driver          = (*Driver)(nil)
	_ storage.SnapshotRenamer = (*Driver)(nil)
)

// New opens the driver's datasets: it imports or creates the pool when
// it is not imported, creates the root dataset and its two children
// (volumes, internal) when missing, removes what an interrupted receive
// left and what deleted volumes no clone needs any more, and mounts the
// volumes that are not mounted.
func New(ctx context.Context, cfg Config) (_ *Driver, retErr error) {
	if cfg.Path == "" || cfg.Pool == "" {
		return nil, errors.New("zfs: config needs a path and a pool")
	}
	root, err := filepath.Abs(cfg.Path)
	if err != nil {
		return nil, fmt.Errorf("zfs: pool path: %w", err)
	}
	d := &Driver{root: root, pool: cfg.Pool, ds: cfg.Dataset, ownPool: cfg.Device != "" || cfg.File != ""}
	if d.ds == "" {
		d.ds = cfg.Pool + "/shoal"
	}
	if !strings.HasPrefix(d.ds, cfg.Pool+"/") {
		return nil, fmt.Errorf("zfs: dataset %q is not inside pool %q", d.ds, cfg.Pool)
	}
	if len(d.ds) > maxRootLen {
		return nil, fmt.Errorf("zfs: dataset name %q is longer than %d bytes", d.ds, maxRootLen)
	}
	if cfg.Device == "" {
		d.file = cfg.File
	}
	created, err := d.ensurePool(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("zfs: %w", err)
	}
	if created {
		// A pool this call made from nothing is undone if it fails.
		defer func() {
			if retErr != nil {
				retErr = errors.Join(retErr, d.Destroy(context.WithoutCancel(ctx)))
			}
		}()
	}
	rootArgs := []string{"create", "-p", "-o", "canmount=off", "-o", prop("mountpoint", root)}
	if cfg.Compression != "" {
		rootArgs = append(rootArgs, "-o", prop("compression", cfg.Compression))
	}
	for _, args := range [][]string{
		append(rootArgs, d.ds),
		{"create", "-p", "-o", "canmount=off", d.volumes()},
		{"create", "-p", "-o", "mountpoint=none", d.internal()},
	} {
		if _, err := zfs(ctx, args...); err != nil {
			return nil, fmt.Errorf("zfs: %w", err)
		}
	}
	if err := d.recover(ctx); err != nil {
		return nil, fmt.Errorf("zfs: %w", err)
	}
	return d, nil
}

// ensurePool makes sure the pool is imported: it imports it from the
// configured vdev, or creates it there (created says so).
func (d *Driver) ensurePool(ctx context.Context, cfg Config) (created bool, err error) {
	if _, err := zpool(ctx, "list", "-H", "-o", "name", d.pool); err == nil {
		return false, nil
	}
	vdev := cfg.Device
	if vdev == "" && cfg.File != "" {
		vdev = cfg.File
		if _, err := os.Stat(cfg.File); errors.Is(err, fs.ErrNotExist) {
			if cfg.FileSize < 64<<20 {
				return false, fmt.Errorf("pool file %s: size %d is below the 64 MiB ZFS needs", cfg.File, cfg.FileSize)
			}
			if err := createSparse(cfg.File, cfg.FileSize); err != nil {
				return false, err
			}
			return true, d.createPool(ctx, vdev)
		}
	}
	if vdev == "" {
		return false, fmt.Errorf("pool %s is not imported and the config names no device or file: %w", d.pool, storage.ErrNotFound)
	}
	// -N: the driver mounts its own datasets (recover).
	if _, ierr := zpool(ctx, "import", "-N", "-d", vdev, d.pool); ierr == nil {
		return false, nil
	} else if cfg.Device == "" {
		return false, ierr // a file that holds no pool is not overwritten
	}
	return true, d.createPool(ctx, vdev)
}

func (d *Driver) createPool(ctx context.Context, vdev string) error {
	// The pool's own root dataset is not mounted: the driver's datasets
	// have mountpoints of their own.
	_, err := zpool(ctx, "create", "-m", "none", d.pool, vdev)
	return err
}

func createSparse(file string, size int64) error {
	f, err := os.OpenFile(file, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(file)
	}
	return err
}

// recover removes interrupted receives, collects deleted volumes no
// clone depends on, and mounts unmounted volumes (after an import -N).
func (d *Driver) recover(ctx context.Context) error {
	ix, err := d.scan(ctx)
	if err != nil {
		return err
	}
	for _, e := range ix.fs {
		parent, c := filepath.Split(e.name)
		parent = strings.TrimSuffix(parent, "/")
		switch {
		case parent == d.internal() && strings.HasPrefix(c, recvPrefix):
			if _, err := zfs(ctx, "destroy", "-r", e.name); err != nil {
				return err
			}
		case parent == d.volumes() && !e.mounted:
			if _, err := zfs(ctx, "mount", e.name); err != nil {
				return err
			}
		}
	}
	if err := d.collect(ctx); err != nil {
		return err
	}
	if ix, err = d.scan(ctx); err != nil {
		return err
	}
	return d.mountAllSnapshots(ctx, ix)
}

// Destroy removes the driver's root dataset with everything in it. When
// Config named a Device or File and the pool then holds nothing else, it
// destroys the pool too and deletes the file. The driver is unusable
// after.
func (d *Driver) Destroy(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var errs []error
	if err := d.unmountSnapshots(ctx); err != nil {
		return fmt.Errorf("zfs: destroy: %w", err)
	}
	if _, err := zpool(ctx, "list", "-H", "-o", "name", d.pool); err != nil {
		errs = append(errs, err)
	} else {
		if _, err := zfs(ctx, "list", "-H", "-o", "name", d.ds); err == nil {
			if _, err := zfs(ctx, "destroy", "-r", d.ds); err != nil {
				errs = append(errs, err)
			}
		}
		if d.ownPool {
			out, err := zfs(ctx, "list", "-H", "-o", "name", "-r", "-t", "all", d.pool)
			if err != nil {
				errs = append(errs, err)
			} else if strings.TrimSpace(string(out)) == d.pool {
				if _, err := zpool(ctx, "destroy", d.pool); err != nil {
					errs = append(errs, err)
				} else if d.file != "" {
					if err := os.Remove(d.file); err != nil && !errors.Is(err, fs.ErrNotExist) {
						errs = append(errs, err)
					}
				}
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		// Something may still be mounted beneath the root: leave it.
		return fmt.Errorf("zfs: destroy: %w", err)
	}
	return os.RemoveAll(d.root)
}

// Info says what the driver can do.
func (d *Driver) Info() storage.Info {
	return storage.Info{Name: "zfs", CoWClone: true, OptimizedSend: true, Quotas: true}
}

// Close unmounts the snapshots (New mounts them again); the volumes stay
// mounted for their containers.
func (d *Driver) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.unmountSnapshots(context.Background()); err != nil {
		return fmt.Errorf("zfs: close: %w", err)
	}
	return nil
}

func (d *Driver) volumes() string  { return d.ds + "/volumes" }
func (d *Driver) internal() string { return d.ds + "/internal" }

// dataset is the ZFS name of a valid volume's filesystem.
func (d *Driver) dataset(vol string) string {
	c, _ := component(vol)
	return d.volumes() + "/" + c
}

// snapName is the ZFS name of a valid volume's valid snapshot.
func (d *Driver) snapName(vol, snap string) string {
	c, _ := component(snap)
	return d.dataset(vol) + "@" + c
}

// Path is the host path of the volume's root directory: its dataset's
// mountpoint, inherited from the root dataset.
func (d *Driver) Path(vol string) string {
	if storage.ValidateVolumeName(vol) != nil {
		return ""
	}
	c, _ := component(vol)
	return filepath.Join(d.root, "volumes", c)
}

// SnapshotPath is the host path of the snapshot's root directory, where
// the driver mounts it (see mounts.go).
func (d *Driver) SnapshotPath(vol, snap string) string {
	if storage.ValidateVolumeName(vol) != nil || storage.ValidateSnapshotName(snap) != nil {
		return ""
	}
	c, _ := component(snap)
	return filepath.Join(d.snapDir(vol), c)
}

// scan lists the driver's filesystems and snapshots.
func (d *Driver) scan(ctx context.Context) (*index, error) {
	out, err := zfs(ctx, "list", "-H", "-p", "-r", "-t", "filesystem,snapshot",
		"-o", strings.Join(listProps, ","), "-s", "createtxg", d.ds)
	if err != nil {
		return nil, err
	}
	return parseList(out)
}
