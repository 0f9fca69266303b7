package idmap

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// capXattr is the extended attribute holding file capabilities; chown
// clears it, so Shift re-applies it.
const capXattr = "security.capability"

// Shift chowns every inode under root (root included) from container ids to
// host ids through m. Symlinks are chowned themselves, never followed. Ids
// already outside 0..Size-1 (for example an already shifted tree) are left
// alone, so Shift is idempotent. Setuid/setgid bits and file capabilities,
// which chown clears, are re-applied. POSIX ACLs are not shifted.
func Shift(ctx context.Context, root string, m Map) error {
	return walkChown(ctx, root, m, toHost)
}

// Unshift is Shift's inverse: it chowns every inode under root from host ids
// in m's range back to container ids (for publishing an image of an
// unprivileged container). Ids outside the host range are left alone.
func Unshift(ctx context.Context, root string, m Map) error {
	return walkChown(ctx, root, m, toContainer)
}

// direction maps one inode's ids; ok is false when it has nothing to change.
type direction func(m Map, uid, gid uint32) (nuid, ngid uint32, ok bool)

func toHost(m Map, uid, gid uint32) (uint32, uint32, bool) {
	if uid >= m.Size && gid >= m.Size {
		return 0, 0, false
	}
	nu, ng := m.ToHost(uid, gid)
	return nu, ng, true
}

func toContainer(m Map, uid, gid uint32) (uint32, uint32, bool) {
	nu, ng := m.ToContainer(uid, gid)
	return nu, ng, nu != uid || ng != gid
}

func walkChown(ctx context.Context, root string, m Map, dir direction) error {
	if m.IsZero() {
		return fmt.Errorf("idmap: shift %s: empty map", root)
	}
	workers := runtime.NumCPU()
	if workers > 4 {
		workers = 4
	}
	if workers < 2 {
		workers = 2
	}
	paths := make(chan string, 256)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	fail := func(err error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		mu.Unlock()
	}
	for range workers {
		wg.Go(func() {
			for p := range paths {
				if err := shiftOne(p, m, dir); err != nil {
					fail(err)
				}
			}
		})
	}
	walkErr := filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		paths <- p
		return nil
	})
	close(paths)
	wg.Wait()
	if walkErr != nil {
		return fmt.Errorf("idmap: shift %s: %w", root, walkErr)
	}
	if firstErr != nil {
		return fmt.Errorf("idmap: shift %s: %w", root, firstErr)
	}
	return nil
}

// shiftOne shifts a single inode.
func shiftOne(p string, m Map, dir direction) error {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return fmt.Errorf("lstat %s: %w", p, err)
	}
	uid, gid, ok := dir(m, st.Uid, st.Gid)
	if !ok {
		return nil
	}
	isLink := st.Mode&unix.S_IFMT == unix.S_IFLNK
	isReg := st.Mode&unix.S_IFMT == unix.S_IFREG
	var caps []byte
	if isReg {
		caps = getCaps(p)
	}
	if err := unix.Lchown(p, int(uid), int(gid)); err != nil {
		return fmt.Errorf("lchown %s: %w", p, err)
	}
	if isLink {
		return nil
	}
	if st.Mode&(unix.S_ISUID|unix.S_ISGID) != 0 {
		if err := unix.Chmod(p, st.Mode&07777); err != nil {
			return fmt.Errorf("chmod %s: %w", p, err)
		}
	}
	if caps != nil {
		if err := unix.Lsetxattr(p, capXattr, caps, 0); err != nil {
			return fmt.Errorf("restore file capabilities of %s: %w", p, err)
		}
	}
	return nil
}

// getCaps returns the raw file capability xattr of p, or nil.
func getCaps(p string) []byte {
	buf := make([]byte, 64)
	n, err := unix.Lgetxattr(p, capXattr, buf)
	if err != nil {
		if errors.Is(err, unix.ERANGE) {
			buf = make([]byte, 1024)
			if n, err = unix.Lgetxattr(p, capXattr, buf); err == nil {
				return buf[:n]
			}
		}
		return nil
	}
	return buf[:n]
}
