package btrfs

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/shoal-dev/shoal/storage"
	"github.com/shoal-dev/shoal/storage/internal/fsutil"
)

// CreateLoopPool creates a sparse image file img of size bytes, formats it
// with btrfs and mounts it at mountpoint (created if missing) through an
// auto-clearing loop device. img must not exist (ErrExists); on failure
// nothing is left behind but the mountpoint directory.
func CreateLoopPool(ctx context.Context, img string, size int64, mountpoint string) (err error) {
	if size <= 0 {
		return fmt.Errorf("create loop pool %s: size %d is not positive", img, size)
	}
	f, err := os.OpenFile(img, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create loop pool %s: %w", img, storage.ErrExists)
	}
	if err != nil {
		return fmt.Errorf("create loop pool: %w", err)
	}
	defer func() {
		if err != nil {
			_ = os.Remove(img)
		}
	}()
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("create loop pool %s: %w", img, err)
	}
	if err := fsutil.Run(ctx, "mkfs.btrfs", "-q", img); err != nil {
		return fmt.Errorf("create loop pool %s: %w", img, err)
	}
	if err := MountLoopPool(ctx, img, mountpoint); err != nil {
		return fmt.Errorf("create loop pool %s: %w", img, err)
	}
	return nil
}

// MountLoopPool mounts the btrfs image img at mountpoint (created if
// missing) with `mount -o loop`, whose loop device is released on unmount.
// It is idempotent: if img is already mounted there, it returns nil; if
// something else is mounted there, it fails.
func MountLoopPool(ctx context.Context, img, mountpoint string) error {
	img, err := filepath.Abs(img)
	if err != nil {
		return fmt.Errorf("mount loop pool: %w", err)
	}
	mountpoint, err = filepath.Abs(mountpoint)
	if err != nil {
		return fmt.Errorf("mount loop pool: %w", err)
	}
	m, ok, err := findMount(mountpoint)
	if err != nil {
		return fmt.Errorf("mount loop pool %s: %w", img, err)
	}
	if ok {
		backing, _ := loopBackingFile(m.source)
		if m.fstype == "btrfs" && sameFile(backing, img) {
			return nil
		}
		return fmt.Errorf("mount loop pool %s: %s is already a mount of %s (%s)", img, mountpoint, m.source, m.fstype)
	}
	if err := os.MkdirAll(mountpoint, 0o711); err != nil {
		return fmt.Errorf("mount loop pool %s: %w", img, err)
	}
	if err := fsutil.Run(ctx, "mount", "-t", "btrfs", "-o", "loop", img, mountpoint); err != nil {
		return fmt.Errorf("mount loop pool %s: %w", img, err)
	}
	return nil
}

// UnmountPool unmounts the pool at mountpoint and makes sure its loop
// device, if any, is released. Unmounting a mountpoint with nothing mounted
// is a no-op.
func UnmountPool(ctx context.Context, mountpoint string) error {
	mountpoint, err := filepath.Abs(mountpoint)
	if err != nil {
		return fmt.Errorf("unmount pool: %w", err)
	}
	m, ok, err := findMount(mountpoint)
	if err != nil {
		return fmt.Errorf("unmount pool %s: %w", mountpoint, err)
	}
	if !ok {
		return nil
	}
	var backing string
	if strings.HasPrefix(m.source, "/dev/loop") {
		backing, _ = loopBackingFile(m.source)
	}
	if err := fsutil.Run(ctx, "umount", mountpoint); err != nil {
		return fmt.Errorf("unmount pool %s: %w", mountpoint, err)
	}
	if backing == "" {
		return nil
	}
	// The kernel clears an autoclear loop device asynchronously after the
	// last close; wait for it, and detach it ourselves if it was set up
	// without autoclear.
	if waitLoopReleased(ctx, m.source, backing, 5*time.Second) {
		return nil
	}
	if still, _, _ := findMountSource(m.source); still {
		return nil // mounted elsewhere too: not ours to release
	}
	if err := fsutil.Run(ctx, "losetup", "-d", m.source); err != nil && !errors.Is(ctx.Err(), context.Canceled) {
		if !waitLoopReleased(ctx, m.source, backing, 0) {
			return fmt.Errorf("unmount pool %s: release %s: %w", mountpoint, m.source, err)
		}
	}
	if !waitLoopReleased(ctx, m.source, backing, 5*time.Second) {
		return fmt.Errorf("unmount pool %s: loop device %s still bound to %s", mountpoint, m.source, backing)
	}
	return nil
}

// waitLoopReleased polls until loop device dev is no longer bound to
// backing, for at most timeout; it reports whether it was released.
func waitLoopReleased(ctx context.Context, dev, backing string, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		if b, err := loopBackingFile(dev); err != nil || b != backing {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type mountEntry struct{ mountpoint, fstype, source string }

// findMount returns the topmost mount at mountpoint from /proc/self/mountinfo.
func findMount(mountpoint string) (mountEntry, bool, error) {
	ms, err := mounts()
	if err != nil {
		return mountEntry{}, false, err
	}
	var found mountEntry
	ok := false
	for _, m := range ms {
		if m.mountpoint == mountpoint {
			found, ok = m, true
		}
	}
	return found, ok, nil
}

// findMountSource reports whether source is mounted anywhere.
func findMountSource(source string) (bool, mountEntry, error) {
	ms, err := mounts()
	if err != nil {
		return false, mountEntry{}, err
	}
	for _, m := range ms {
		if m.source == source {
			return true, m, nil
		}
	}
	return false, mountEntry{}, nil
}

func mounts() ([]mountEntry, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []mountEntry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		// id parent maj:min root mountpoint opts [optional...] - fstype source superopts
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, f := range fields {
			if f == "-" {
				sep = i
				break
			}
		}
		if len(fields) < 5 || sep < 0 || sep+2 >= len(fields) {
			continue
		}
		out = append(out, mountEntry{
			mountpoint: unescapeMountinfo(fields[4]),
			fstype:     fields[sep+1],
			source:     unescapeMountinfo(fields[sep+2]),
		})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	return out, nil
}

// unescapeMountinfo undoes the octal escapes (\040 and the like) of mountinfo.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// loopBackingFile returns the file behind loop device dev ("/dev/loop3").
func loopBackingFile(dev string) (string, error) {
	b, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(dev), "loop", "backing_file"))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

func sameFile(a, b string) bool {
	if a == "" || b == "" {
		return false
	}
	ai, err1 := os.Stat(a)
	bi, err2 := os.Stat(b)
	return err1 == nil && err2 == nil && os.SameFile(ai, bi)
}
