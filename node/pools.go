package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/shoal-dev/shoal/cluster"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
	"github.com/shoal-dev/shoal/storage"
	"github.com/shoal-dev/shoal/storage/btrfs"
	"github.com/shoal-dev/shoal/storage/dir"
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
	}
	return nil, fmt.Errorf("%w: driver %q (allowed: btrfs, dir)", ErrInvalidPool, p.GetDriver())
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
	return diskUsed(poolDir(d))
}
