package node

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/shoal-dev/shoal/cluster"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
	"github.com/shoal-dev/shoal/storage"
	"github.com/shoal-dev/shoal/storage/btrfs"
	"github.com/shoal-dev/shoal/storage/dir"
	"github.com/shoal-dev/shoal/storage/lvm"
	"github.com/shoal-dev/shoal/storage/zfs"
)

// ErrInvalidPool marks a pool request the node cannot satisfy as asked.
var ErrInvalidPool = errors.New("invalid storage pool")

// openPools mounts and opens every pool the cluster records, creating the
// default pool on first start.
func (n *Node) openPools(ctx context.Context) error {
	pools := n.fsm.Pools()
	if len(pools) == 0 {
		dp := n.cfg.DefaultPool
		if _, err := n.CreatePool(ctx, &shoalv1.StoragePool{Name: dp.Name, Driver: dp.Driver, Source: dp.Source, SizeBytes: dp.Size}); err != nil {
			return fmt.Errorf("create default pool: %w", err)
		}
		return nil
	}
	for _, p := range pools {
		d, err := n.openPool(ctx, p, false)
		if err != nil {
			return fmt.Errorf("open storage pool %s: %w", p.GetName(), err)
		}
		n.poolsMu.Lock()
		n.pools[p.GetName()] = d
		n.poolsMu.Unlock()
	}
	return nil
}

// CreatePool creates a pool on this host and records it in the cluster.
func (n *Node) CreatePool(ctx context.Context, p *shoalv1.StoragePool) (*shoalv1.StoragePool, error) {
	if _, err := n.fsm.Pool(p.GetName()); err == nil {
		return nil, fmt.Errorf("storage pool %q: %w", p.GetName(), cluster.ErrExists)
	}
	d, err := n.openPool(ctx, p, true)
	if err != nil {
		return nil, err
	}
	if err := n.cl.Propose(ctx, &shoalv1.PoolCreateCommand{Pool: p}); err != nil {
		d.Close()
		return nil, err
	}
	n.poolsMu.Lock()
	n.pools[p.GetName()] = d
	n.poolsMu.Unlock()
	n.bus.Lifecycle(n.cfg.Name, "storage-pool-created", p.GetName())
	return p, nil
}

// openPool opens (and with create, first creates) a pool on this host. It
// fills in defaults (source, size) in p.
func (n *Node) openPool(ctx context.Context, p *shoalv1.StoragePool, create bool) (storage.Driver, error) {
	base := filepath.Join(n.cfg.StateDir, "storage-pools", p.GetName())
	switch p.GetDriver() {
	case "btrfs":
		mnt := p.GetSource()
		if mnt == "" || p.GetConfig()["loop"] != "" {
			// A loop pool lives in each node's own state dir; a node that
			// opens a pool the cluster already has makes its own loop file.
			img := filepath.Join(n.cfg.StateDir, "disks", p.GetName()+".img")
			mnt = base
			if p.Config == nil {
				p.Config = map[string]string{}
			}
			p.Config["loop"] = "true"
			p.Source = ""
			if _, err := os.Stat(img); errors.Is(err, os.ErrNotExist) && !create {
				create = true
				n.log.Info("creating this node's loop file for the cluster's pool", "pool", p.GetName(), "size", p.GetSizeBytes())
			}
			if create {
				if p.GetSizeBytes() == 0 {
					p.SizeBytes = defaultPoolSize(n.cfg.StateDir)
				}
				if err := os.MkdirAll(filepath.Dir(img), 0o700); err != nil {
					return nil, err
				}
				if _, err := os.Stat(img); err == nil {
					return nil, fmt.Errorf("%w: loop file %s already exists", ErrInvalidPool, img)
				}
				if err := btrfs.CreateLoopPool(ctx, img, p.GetSizeBytes(), mnt); err != nil {
					return nil, err
				}
			} else if err := btrfs.MountLoopPool(ctx, img, mnt); err != nil {
				return nil, err
			}
		}
		return btrfs.New(ctx, btrfs.Config{Path: mnt, DisableQuotas: p.GetConfig()["btrfs.quotas"] != "true"})
	case "dir":
		path := p.GetSource()
		if path == "" {
			path = base
			p.Source = base
		}
		if err := os.MkdirAll(path, 0o711); err != nil {
			return nil, err
		}
		return dir.New(dir.Config{Path: path})
	case "zfs":
		return n.openZFS(ctx, p, base, create)
	case "lvm":
		return n.openLVM(ctx, p, base, create)
	}
	return nil, fmt.Errorf("%w: driver %q (allowed: btrfs, dir, lvm, zfs)", ErrInvalidPool, p.GetDriver())
}

// openZFS opens a zfs pool. Its source is a block device for a new zpool,
// the name of an existing zpool (the driver's root dataset is then
// <zpool>/shoal-<pool>) or of a dataset in one (the root dataset itself),
// or empty: a zpool on a sparse file in this node's state dir, of
// size_bytes (a loop pool, as btrfs's: each node makes its own).
func (n *Node) openZFS(ctx context.Context, p *shoalv1.StoragePool, base string, create bool) (storage.Driver, error) {
	cfg := zfs.Config{Path: base}
	src := p.GetSource()
	switch {
	case src == "" || p.GetConfig()["loop"] != "":
		img, err := n.loopPool(p, create)
		if err != nil {
			return nil, err
		}
		cfg.Pool, cfg.File, cfg.FileSize = n.hostPoolName(p), img, p.GetSizeBytes()
	case strings.HasPrefix(src, "/"):
		if err := blockDevice(src); err != nil {
			return nil, err
		}
		cfg.Pool, cfg.Device = n.hostPoolName(p), src
	default:
		zpool, _, nested := strings.Cut(src, "/")
		cfg.Pool, cfg.Dataset = zpool, src
		if !nested {
			cfg.Dataset = zpool + "/shoal-" + p.GetName()
		}
	}
	d, err := zfs.New(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("zfs pool %s: %w", p.GetName(), err)
	}
	return d, nil
}

// openLVM opens an lvm pool: a thin pool shoal-<pool> in a volume group.
// Its source is a block device for a new VG, the name of an existing VG,
// or empty: a VG on a loop file in this node's state dir, of size_bytes
// (a loop pool). In an existing VG, size_bytes is the thin pool's size
// (default: 90% of the VG's free space).
func (n *Node) openLVM(ctx context.Context, p *shoalv1.StoragePool, base string, create bool) (storage.Driver, error) {
	cfg := lvm.Config{Path: base, ThinPool: "shoal-" + p.GetName()}
	src := p.GetSource()
	switch {
	case src == "" || p.GetConfig()["loop"] != "":
		img, err := n.loopPool(p, create)
		if err != nil {
			return nil, err
		}
		cfg.VolumeGroup, cfg.LoopFile, cfg.LoopSize = n.hostPoolName(p), img, p.GetSizeBytes()
	case strings.HasPrefix(src, "/"):
		if err := blockDevice(src); err != nil {
			return nil, err
		}
		cfg.VolumeGroup, cfg.Device = n.hostPoolName(p), src
	default:
		cfg.VolumeGroup, cfg.PoolSize = src, p.GetSizeBytes()
	}
	d, err := lvm.New(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("lvm pool %s: %w", p.GetName(), err)
	}
	return d, nil
}

// loopPool marks p as a loop pool (config loop=true, no source: the
// cluster records one pool, each node backs it with a file of its own)
// and returns this node's file for it, which the driver creates when
// missing. Creating the pool anew, the file must not exist yet; a node
// that opens a pool the cluster already has makes its file then.
func (n *Node) loopPool(p *shoalv1.StoragePool, create bool) (string, error) {
	img := filepath.Join(n.cfg.StateDir, "disks", p.GetName()+".img")
	if p.Config == nil {
		p.Config = map[string]string{}
	}
	p.Config["loop"] = "true"
	p.Source = ""
	_, err := os.Stat(img)
	missing := errors.Is(err, os.ErrNotExist)
	if create && !missing {
		return "", fmt.Errorf("%w: loop file %s already exists", ErrInvalidPool, img)
	}
	if missing {
		if !create {
			n.log.Info("creating this node's loop file for the cluster's pool", "pool", p.GetName(), "size", p.GetSizeBytes())
		}
		if p.GetSizeBytes() == 0 {
			p.SizeBytes = defaultPoolSize(n.cfg.StateDir)
		}
	}
	if err := os.MkdirAll(filepath.Dir(img), 0o700); err != nil {
		return "", err
	}
	return img, nil
}

// hostPoolName is the name of the zpool or VG this node makes for pool p
// (on a loop file or a device): unique per state dir, since several
// daemons may share a host and zpool and VG names are host-wide.
func (n *Node) hostPoolName(p *shoalv1.StoragePool) string {
	sum := sha256.Sum256([]byte(n.cfg.StateDir))
	return "shoal-" + p.GetName() + "-" + hex.EncodeToString(sum[:4])
}

// blockDevice checks that path is a block device.
func blockDevice(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("%w: source: %w", ErrInvalidPool, err)
	}
	if fi.Mode()&os.ModeDevice == 0 || fi.Mode()&os.ModeCharDevice != 0 {
		return fmt.Errorf("%w: source %s is not a block device", ErrInvalidPool, path)
	}
	return nil
}

// defaultPoolSize is LXD's rule: a fifth of the free space, 5-30 GiB.
func defaultPoolSize(dir string) int64 {
	const gib = 1 << 30
	free := freeBytes(dir)
	size := free / 5
	if size < 5*gib {
		size = 5 * gib
	}
	if size > 30*gib {
		size = 30 * gib
	}
	return size
}

// PoolUsage returns the bytes used in a pool.
func (n *Node) PoolUsage(ctx context.Context, name string) (int64, error) {
	n.poolsMu.RLock()
	d, ok := n.pools[name]
	n.poolsMu.RUnlock()
	if !ok {
		return 0, fmt.Errorf("storage pool %q: %w", name, storage.ErrNotFound)
	}
	if u, ok := d.(poolUser); ok {
		return u.PoolUsed(ctx)
	}
	return diskUsed(poolDir(d))
}

// poolUser is a driver that says how much of its pool is used, where
// statfs of the pool directory cannot (zfs, lvm: volumes are separate
// filesystems and the directory holds only their mountpoints).
type poolUser interface {
	PoolUsed(ctx context.Context) (int64, error)
}
