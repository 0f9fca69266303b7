package lvm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// run runs an LVM (or other) command and returns its stdout; the error
// includes the command line and its stderr.
func run(ctx context.Context, name string, args ...string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	// LVM warns about every inherited descriptor (Go's runtime has some).
	cmd.Env = append(os.Environ(), "LVM_SUPPRESS_FD_WARNINGS=1")
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			return nil, fmt.Errorf("%s: %w", strings.Join(cmd.Args, " "), err)
		}
		return nil, fmt.Errorf("%s: %w: %s", strings.Join(cmd.Args, " "), err, msg)
	}
	return stdout.Bytes(), nil
}

// isMountpoint reports whether p is the root of a mount of another
// device than its parent's (what the driver mounts always is).
func isMountpoint(p string) (bool, error) {
	var st, pst unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, fmt.Errorf("lstat %s: %w", p, err)
	}
	if err := unix.Lstat(filepath.Dir(p), &pst); err != nil {
		return false, fmt.Errorf("lstat %s: %w", filepath.Dir(p), err)
	}
	return st.Dev != pst.Dev, nil
}

// mountedAt reports whether block device dev is what is mounted at dir.
func mountedAt(dir, dev string) bool {
	var st, dst unix.Stat_t
	if ok, err := isMountpoint(dir); err != nil || !ok {
		return false
	}
	if unix.Stat(dir, &st) != nil || unix.Stat(dev, &dst) != nil {
		return false
	}
	return st.Dev == dst.Rdev
}

// mount mounts the ext4 filesystem on dev at dir (created if missing),
// read-only (without replaying the journal: snapshots are clean) or
// read-write with project quotas enforced.
func mount(ctx context.Context, dev, dir string, readOnly bool) error {
	if ok, err := isMountpoint(dir); err != nil {
		return err
	} else if ok {
		return nil
	}
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return err
	}
	opts := "prjquota"
	if readOnly {
		opts = "ro,noload"
	}
	_, err := run(ctx, "mount", "-t", "ext4", "-o", opts, dev, dir)
	return err
}

// unmount unmounts dir if something is mounted there, then removes the
// directory.
func unmount(ctx context.Context, dir string) error {
	ok, err := isMountpoint(dir)
	if err != nil {
		return err
	}
	if ok {
		if _, err := run(ctx, "umount", dir); err != nil {
			return err
		}
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// Project quotas (ext4): every file of a volume belongs to project 1,
// inherited from the volume's root directory, and the limit is that
// project's hard block limit, set with quotactl(2) on the LV.
const (
	projectID          = 1
	fsIocFsgetxattr    = 0x801c581f // _IOR('X', 31, struct fsxattr)
	fsIocFssetxattr    = 0x401c5820 // _IOW('X', 32, struct fsxattr)
	fsXflagProjinherit = 0x00000200
	qGetquota          = 0x800007
	qSetquota          = 0x800008
	prjquota           = 2
	qifBlimits         = 1
	qifSpace           = 4
)

type fsxattr struct {
	xflags     uint32
	extsize    uint32
	nextents   uint32
	projid     uint32
	cowextsize uint32
	pad        [8]byte
}

type ifDqblk struct {
	bhardlimit uint64 // in 1 KiB blocks
	bsoftlimit uint64
	curspace   uint64 // bytes
	ihardlimit uint64
	isoftlimit uint64
	curinodes  uint64
	btime      uint64
	itime      uint64
	valid      uint32
	_          uint32
}

// setProject puts the directory dir in projectID, inherited by all that
// is created beneath it.
func setProject(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	var fa fsxattr
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), fsIocFsgetxattr, uintptr(unsafe.Pointer(&fa))); e != 0 {
		return fmt.Errorf("FS_IOC_FSGETXATTR %s: %w", dir, e)
	}
	fa.projid = projectID
	fa.xflags |= fsXflagProjinherit
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), fsIocFssetxattr, uintptr(unsafe.Pointer(&fa))); e != 0 {
		return fmt.Errorf("FS_IOC_FSSETXATTR %s: %w", dir, e)
	}
	return nil
}

func quotactl(cmd int, dev string, q *ifDqblk) error {
	p, err := syscall.BytePtrFromString(dev)
	if err != nil {
		return err
	}
	qcmd := cmd<<8 | prjquota
	if _, _, e := syscall.Syscall6(syscall.SYS_QUOTACTL, uintptr(qcmd), uintptr(unsafe.Pointer(p)), projectID, uintptr(unsafe.Pointer(q)), 0, 0); e != 0 {
		return fmt.Errorf("quotactl %s: %w", dev, e)
	}
	return nil
}

// getQuota returns the bytes the project uses and its limit (0: none).
func getQuota(dev string) (used, limit int64, err error) {
	var q ifDqblk
	if err := quotactl(qGetquota, dev, &q); err != nil {
		return 0, 0, err
	}
	return int64(q.curspace), int64(q.bhardlimit) * 1024, nil
}

// setQuota sets the project's hard limit to bytes, rounded up to KiB;
// 0 removes it.
func setQuota(dev string, bytes int64) error {
	q := ifDqblk{bhardlimit: uint64((bytes + 1023) / 1024), valid: qifBlimits}
	return quotactl(qSetquota, dev, &q)
}
