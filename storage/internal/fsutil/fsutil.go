// Package fsutil holds small file-tree helpers shared by Shoal's storage
// drivers: disk usage of a tree, a full-fidelity tree copy, running their
// tools, and moving a volume with its snapshots.
package fsutil

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// DiskUsage sums the allocated bytes of the tree at root (like du -s),
// counting each hardlinked inode once and not following symlinks.
func DiskUsage(ctx context.Context, root string) (int64, error) {
	type key struct{ dev, ino uint64 }
	seen := map[key]bool{}
	var total int64
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return fmt.Errorf("lstat %s: %w", p, err)
		}
		if st.Nlink > 1 && st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
			k := key{uint64(st.Dev), st.Ino}
			if seen[k] {
				return nil
			}
			seen[k] = true
		}
		total += st.Blocks * 512
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("disk usage of %s: %w", root, err)
	}
	return total, nil
}

// CopyTree copies the directory src to dst, which must not exist, with
// `cp -a --reflink=auto`: ownership, modes, timestamps, xattrs, device
// nodes, fifos, symlinks and hardlinks are preserved, and blocks are shared
// where the filesystem can.
func CopyTree(ctx context.Context, src, dst string) error {
	return Run(ctx, "cp", "-a", "--reflink=auto", "--no-target-directory", src, dst)
}

// Run runs a command; its error includes the command line and its stderr.
func Run(ctx context.Context, name string, args ...string) error {
	_, err := Output(ctx, name, args...)
	return err
}

// Output runs a command and returns its stdout; its error includes the
// command line and its stderr.
func Output(ctx context.Context, name string, args ...string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return nil, CmdError(cmd, err, stderr.Bytes())
	}
	return stdout.Bytes(), nil
}

// CmdError formats a failed command's error with its stderr.
func CmdError(cmd *exec.Cmd, err error, stderr []byte) error {
	msg := stderrSummary(stderr)
	if msg == "" {
		return fmt.Errorf("%s: %w", strings.Join(cmd.Args, " "), err)
	}
	return fmt.Errorf("%s: %w: %s", strings.Join(cmd.Args, " "), err, msg)
}

// stderrSummary is a tool's stderr on one line: its error lines when it
// printed any (btrfs receive says "At subvol X" before "ERROR: ... No
// space left on device"), else all its lines, joined by "; ".
func stderrSummary(stderr []byte) string {
	var all, errs []string
	for _, l := range strings.Split(string(stderr), "\n") {
		if l = strings.TrimSpace(l); l == "" {
			continue
		}
		all = append(all, l)
		if strings.Contains(strings.ToLower(l), "error") {
			errs = append(errs, l)
		}
	}
	if len(errs) > 0 {
		return strings.Join(errs, "; ")
	}
	return strings.Join(all, "; ")
}

// RenameVolume moves a volume's root directory and its snapshot directory
// (which may not exist) to their new places, on the same filesystem. The
// caller has checked that the source exists and the target does not. When
// the snapshots cannot follow, the volume is moved back.
func RenameVolume(volPath, newVolPath, snapDir, newSnapDir string) error {
	if err := os.MkdirAll(filepath.Dir(newVolPath), 0o700); err != nil {
		return err
	}
	if err := os.Rename(volPath, newVolPath); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(newSnapDir), 0o700); err != nil {
		return errors.Join(err, os.Rename(newVolPath, volPath))
	}
	if err := os.Rename(snapDir, newSnapDir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return errors.Join(err, os.Rename(newVolPath, volPath))
	}
	return nil
}
