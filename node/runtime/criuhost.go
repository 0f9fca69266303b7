package runtime

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"
)

// Two host-level costs of CRIU weigh on a live move's downtime here, and
// Shoal removes both: the kernel probe CRIU runs at every start when it
// cannot keep its cache (CacheKernelFeatures), and the network lock's
// default method, which runs iptables-restore (through the nft backend,
// ~60 ms of a ~150 ms restore) where libnftables does it in-process.

// networkLock is the --network-lock method Shoal dumps with: nftables when
// this CRIU and kernel support it (libnftables and set concatenations),
// else CRIU's default, iptables. A restore locks the way its dump did, so
// the members of a cluster need the same support (they run the same CRIU
// bundle from scripts/criu-bundle.sh).
var networkLock = sync.OnceValue(func() string {
	if exec.Command("criu", "check", "--feature", "network_lock_nftables").Run() == nil {
		return "nftables"
	}
	return "iptables"
})

// NetworkLock probes, once, and returns the method Shoal's dumps lock a
// container's network with ("nftables" or "iptables"). Callers probe it
// ahead of a freeze so that the first dump does not pay for the probe.
func NetworkLock() string { return networkLock() }

// dumpArgs are the extra CRIU arguments of every dump, then extra.
func dumpArgs(extra []string) []string {
	return append([]string{"--network-lock", networkLock()}, extra...)
}

// CRIU probes the kernel (netns, veth, nftables, ptrace, userfaultfd and
// more) at the start of every dump and restore: ~40-50 ms here, twice in a
// live move's downtime. It caches the result in /run/criu.kdat, but only
// when /run is a tmpfs (so the cache dies with the kernel that wrote it);
// on a host whose /run is a plain directory it probes every time, and a
// failed save leaves /run/criu.kdat.tmp behind, which stops later saves.

const (
	kdatPath   = "/run/criu.kdat"
	kdatShared = "/dev/shm/shoal-criu.kdat"
)

// CacheKernelFeatures gives CRIU its kernel-feature cache on a host whose
// /run is not a tmpfs: it lets CRIU write the cache in a private mount
// namespace with a tmpfs /run, keeps it in /dev/shm (a tmpfs, so it still
// dies with the kernel) and bind-mounts it on /run/criu.kdat, where CRIU
// reads it. It reports whether it mounted a cache; on a tmpfs /run, or when
// the cache is already mounted, it does nothing.
func CacheKernelFeatures(ctx context.Context) (bool, error) {
	var run unix.Statfs_t
	if err := unix.Statfs("/run", &run); err != nil {
		return false, fmt.Errorf("statfs /run: %w", err)
	}
	if run.Type == unix.TMPFS_MAGIC {
		return false, nil // CRIU keeps its own cache there
	}
	if mounted, err := kdatMounted(); err != nil || mounted {
		return false, err
	}
	// A kdat written by this kernel's CRIU, from a private /run.
	cmd := exec.CommandContext(ctx, "unshare", "--mount", "--propagation", "private", "sh", "-c",
		`mount -t tmpfs -o size=1m,mode=0700 shoal-criu-kdat /run && criu check >/dev/null 2>&1; cat /run/criu.kdat`)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	data, err := cmd.Output()
	if err == nil && len(data) == 0 {
		err = errors.New("CRIU wrote no cache")
	}
	if err != nil {
		return false, fmt.Errorf("let CRIU write its kernel-feature cache: %w: %s", err, oneLine(stderr.Bytes()))
	}
	// Daemons of simulated hosts may start together: each writes its own
	// temporary file, and the renames replace one cache with an equal one.
	tmp, err := os.CreateTemp(filepath.Dir(kdatShared), ".shoal-criu.kdat-*")
	if err != nil {
		return false, fmt.Errorf("keep CRIU's kernel-feature cache: %w", err)
	}
	_, werr := tmp.Write(data)
	if cerr := tmp.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(tmp.Name(), kdatShared)
	}
	if werr != nil {
		os.Remove(tmp.Name())
		return false, fmt.Errorf("keep CRIU's kernel-feature cache: %w", werr)
	}
	// The leftover of a save CRIU could not finish would stop it from
	// saving again; the mount point is an empty file.
	_ = os.Remove(kdatPath + ".tmp")
	f, err := os.OpenFile(kdatPath, os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return false, fmt.Errorf("mount point for CRIU's kernel-feature cache: %w", err)
	}
	f.Close()
	if err := unix.Mount(kdatShared, kdatPath, "", unix.MS_BIND, ""); err != nil {
		return false, fmt.Errorf("bind-mount CRIU's kernel-feature cache on %s: %w", kdatPath, err)
	}
	return true, nil
}

// UncacheKernelFeatures undoes what CacheKernelFeatures mounted.
func UncacheKernelFeatures() error {
	if err := unix.Unmount(kdatPath, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("unmount %s: %w", kdatPath, err)
	}
	_ = os.Remove(kdatPath)
	return nil
}

// kdatMounted reports whether /run/criu.kdat is a non-empty file on
// another filesystem than /run (the bind mount of an earlier call).
func kdatMounted() (bool, error) {
	var run, kd unix.Stat_t
	if err := unix.Stat("/run", &run); err != nil {
		return false, fmt.Errorf("stat /run: %w", err)
	}
	if err := unix.Stat(kdatPath, &kd); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, fmt.Errorf("stat %s: %w", kdatPath, err)
	}
	return kd.Dev != run.Dev && kd.Size > 0, nil
}
