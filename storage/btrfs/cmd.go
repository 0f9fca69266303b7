package btrfs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"unsafe"

	"github.com/shoal-dev/shoal/storage/internal/fsutil"
)

// superMagic is BTRFS_SUPER_MAGIC, the statfs f_type of a btrfs filesystem.
const superMagic = 0x9123683E

// firstFreeObjectID is the inode number of every subvolume's root directory.
const firstFreeObjectID = 256

// iocInoLookup is BTRFS_IOC_INO_LOOKUP: _IOWR(0x94, 18, struct of 4096 bytes).
const iocInoLookup = 0xD0009412

type inoLookupArgs struct {
	treeID   uint64
	objectID uint64
	name     [4080]byte
}

// btrfsCmd runs the btrfs CLI; errors include its stderr.
func btrfsCmd(ctx context.Context, args ...string) error {
	return fsutil.Run(ctx, "btrfs", args...)
}

// isBtrfs reports whether path is on a btrfs filesystem.
func isBtrfs(path string) (bool, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return false, fmt.Errorf("statfs %s: %w", path, err)
	}
	return uint32(st.Type) == superMagic, nil
}

// isSubvolume reports whether path is the root of a subvolume; a missing
// path is (false, nil).
func isSubvolume(path string) (bool, error) {
	var st syscall.Stat_t
	if err := syscall.Lstat(path, &st); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil
		}
		return false, fmt.Errorf("lstat %s: %w", path, err)
	}
	return st.Mode&syscall.S_IFMT == syscall.S_IFDIR && st.Ino == firstFreeObjectID, nil
}

// subvolumeID returns the btrfs tree id of the subvolume whose root is path.
// Ids grow with every new subvolume, so they order snapshots by creation.
func subvolumeID(path string) (uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("subvolume id of %s: %w", path, err)
	}
	defer f.Close()
	args := inoLookupArgs{objectID: firstFreeObjectID}
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), iocInoLookup, uintptr(unsafe.Pointer(&args))); errno != 0 {
		return 0, fmt.Errorf("subvolume id of %s: BTRFS_IOC_INO_LOOKUP: %w", path, errno)
	}
	return args.treeID, nil
}

// deleteSubvolumes deletes the subvolumes at paths. A subvolume holding
// nested subvolumes (created from inside a container) has those deleted
// first, deepest first.
func deleteSubvolumes(ctx context.Context, paths ...string) error {
	if len(paths) == 0 {
		return nil
	}
	args := append([]string{"subvolume", "delete"}, paths...)
	err := btrfsCmd(ctx, args...)
	if err == nil {
		return nil
	}
	var nested []string
	for _, p := range paths {
		n, werr := nestedSubvolumes(p)
		if werr != nil {
			return errors.Join(err, werr)
		}
		nested = append(nested, n...)
	}
	if len(nested) == 0 {
		return err
	}
	sort.Slice(nested, func(i, j int) bool { return len(nested[i]) > len(nested[j]) })
	for _, n := range nested {
		if err := btrfsCmd(ctx, "subvolume", "delete", n); err != nil {
			return err
		}
	}
	// The first attempt may have deleted some of paths already.
	args = args[:2]
	for _, p := range paths {
		if ok, err := isSubvolume(p); err != nil {
			return err
		} else if ok {
			args = append(args, p)
		}
	}
	if len(args) == 2 {
		return nil
	}
	return btrfsCmd(ctx, args...)
}

// nestedSubvolumes lists the subvolumes inside the subvolume at root.
func nestedSubvolumes(root string) ([]string, error) {
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() || p == root {
			return nil
		}
		if ok, err := isSubvolume(p); err != nil {
			return err
		} else if ok {
			out = append(out, p)
		}
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("find nested subvolumes in %s: %w", root, err)
	}
	return out, nil
}
