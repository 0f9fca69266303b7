// Package inroot opens files inside a directory tree that someone else
// controls (a running container's root filesystem, an image being
// unpacked) so that path resolution never leaves the tree, even while the
// tree changes underneath.
//
// Resolution and opening are one kernel operation: openat2(2) on a
// descriptor of the root with RESOLVE_IN_ROOT (or RESOLVE_BENEATH) and
// RESOLVE_NO_MAGICLINKS. Where openat2 is missing (kernels before 5.6,
// ENOSYS) the same rules are applied by a walk of one
// openat(O_PATH|O_NOFOLLOW) per component from the root's descriptor; each
// symlink is read through its own descriptor and resolved again from the
// directory descriptor it sits in (or from the root), never through a path
// string on the host.
//
// The package owns no files: callers pass and own every descriptor.
package inroot

import (
	"errors"
	"os"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Scope says how a path may move within the tree.
type Scope uint8

const (
	// InRoot resolves the path as a process whose root directory is the
	// tree would: ".." at the root stays at the root, and absolute
	// symlinks start again from the root.
	InRoot Scope = iota
	// Beneath refuses every step that leaves the tree: an absolute path or
	// symlink, or a ".." above the root, fails with ErrEscape.
	Beneath
)

// ErrEscape reports that a path, under Beneath, leads outside the root.
var ErrEscape = errors.New("inroot: path leads outside the root")

// maxSymlinks is the kernel's limit of symlinks followed in one lookup.
const maxSymlinks = 40

// maxRetries bounds the retries of a lookup the kernel (EAGAIN: a rename
// or mount raced a ".." step) or the walk (a name replaced between two
// steps) could not complete safely.
const maxRetries = 64

// forceWalk makes Open skip openat2; noOpenat2 records that the kernel has
// none.
var forceWalk, noOpenat2 atomic.Bool

// ForceWalk makes Open use the per-component walk, as on a kernel without
// openat2, while on is true; it returns the previous setting. It exists so
// tests can exercise the fallback on any kernel.
func ForceWalk(on bool) bool { return forceWalk.Swap(on) }

// Open opens path below the directory root (a descriptor, which may be
// O_PATH) with flags, confined by scope. path is taken relative to root
// whether or not it starts with "/"; "" and "/" name the root itself. As
// with open(2), a final symlink is followed unless flags has O_NOFOLLOW
// (then, with O_PATH, the symlink itself is opened; without, ELOOP).
// O_CLOEXEC is always added; O_CREAT and O_TMPFILE are refused (create
// names with openat on a directory descriptor Open returned).
//
// Errors wrap the errno (test with errors.Is: unix.ENOENT, unix.ENOTDIR,
// unix.ELOOP for too many symlinks or a refused one) or ErrEscape.
func Open(root int, path string, flags int, scope Scope) (int, error) {
	if strings.IndexByte(path, 0) >= 0 || flags&unix.O_CREAT != 0 || flags&unix.O_TMPFILE == unix.O_TMPFILE {
		return -1, &os.PathError{Op: "open", Path: path, Err: unix.EINVAL}
	}
	flags |= unix.O_CLOEXEC
	if !forceWalk.Load() && !noOpenat2.Load() {
		fd, err := openat2(root, path, flags, scope)
		switch {
		case err == nil:
			return fd, nil
		case errors.Is(err, unix.ENOSYS):
			noOpenat2.Store(true)
		case errors.Is(err, unix.EAGAIN):
			// Renames kept racing the kernel's ".." checks; the walk
			// keeps its own record of the directories it went through.
		default:
			return -1, err
		}
	}
	for range maxRetries {
		fd, err := walk(root, path, flags, scope)
		if !errors.Is(err, errRetry) {
			return fd, err
		}
	}
	return -1, &os.PathError{Op: "open", Path: path, Err: unix.EAGAIN}
}

// openat2 is one openat2(2) call, retried while the kernel asks for it.
func openat2(root int, path string, flags int, scope Scope) (int, error) {
	if path == "" {
		path = "."
	}
	how := unix.OpenHow{Flags: uint64(flags), Resolve: unix.RESOLVE_NO_MAGICLINKS}
	if scope == Beneath {
		how.Resolve |= unix.RESOLVE_BENEATH
	} else {
		how.Resolve |= unix.RESOLVE_IN_ROOT
	}
	var err error
	for range maxRetries {
		var fd int
		fd, err = unix.Openat2(root, path, &how)
		switch {
		case err == nil:
			return fd, nil
		case errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EXDEV) && scope == Beneath:
			return -1, &os.PathError{Op: "openat2", Path: path, Err: ErrEscape}
		}
		break
	}
	return -1, &os.PathError{Op: "openat2", Path: path, Err: err}
}

// errRetry makes Open start a walk again: a name changed between two of
// its steps.
var errRetry = errors.New("inroot: retry")

// walk resolves path one component at a time. It holds a descriptor of
// every directory it entered (stack), so ".." goes back to the directory
// it came from, never to whatever is now that directory's parent.
func walk(root int, path string, flags int, scope Scope) (fd int, err error) {
	var stack []int
	defer func() {
		for _, d := range stack {
			unix.Close(d)
		}
		if err != nil && !errors.Is(err, errRetry) {
			var pe *os.PathError
			if !errors.As(err, &pe) {
				err = &os.PathError{Op: "open", Path: path, Err: err}
			}
		}
	}()
	cur := func() int {
		if len(stack) == 0 {
			return root
		}
		return stack[len(stack)-1]
	}
	if scope == Beneath && strings.HasPrefix(path, "/") {
		return -1, ErrEscape
	}
	todo := components(path)
	links := 0
	for {
		// "." and ".." move within what the walk holds.
		for len(todo) > 0 && (todo[0] == "." || todo[0] == "..") {
			if todo[0] == ".." {
				switch {
				case len(stack) > 0:
					unix.Close(stack[len(stack)-1])
					stack = stack[:len(stack)-1]
				case scope == Beneath:
					return -1, ErrEscape
				}
			}
			todo = todo[1:]
		}
		if len(todo) == 0 { // the path ends at a directory the walk holds
			return unix.Openat(cur(), ".", flags, 0)
		}
		name := todo[0]
		todo = todo[1:]
		last := len(todo) == 0
		fd, err := unix.Openat(cur(), name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return -1, err
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			unix.Close(fd)
			return -1, err
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			stack = append(stack, fd)
			if last {
				return unix.Openat(fd, ".", flags, 0)
			}
		case unix.S_IFLNK:
			if magic(fd) {
				unix.Close(fd)
				return -1, unix.ELOOP // as RESOLVE_NO_MAGICLINKS
			}
			if last && flags&unix.O_NOFOLLOW != 0 {
				if flags&unix.O_PATH != 0 {
					return fd, nil
				}
				unix.Close(fd)
				return -1, unix.ELOOP
			}
			links++
			target, err := readlink(fd)
			unix.Close(fd)
			switch {
			case err != nil:
				return -1, err
			case links > maxSymlinks:
				return -1, unix.ELOOP
			case target == "":
				return -1, unix.ENOENT
			case strings.HasPrefix(target, "/"):
				if scope == Beneath {
					return -1, ErrEscape
				}
				for _, d := range stack {
					unix.Close(d)
				}
				stack = nil
			}
			todo = append(components(target), todo...)
		default:
			if !last {
				unix.Close(fd)
				return -1, unix.ENOTDIR
			}
			if flags&unix.O_DIRECTORY != 0 {
				unix.Close(fd)
				return -1, unix.ENOTDIR
			}
			if flags&unix.O_PATH != 0 {
				return fd, nil
			}
			nfd, err := reopen(cur(), name, fd, &st, flags)
			unix.Close(fd)
			return nfd, err
		}
	}
}

// reopen opens name in dir with flags and checks that it is still the
// inode the walk looked at (held by pathFd, stat st); if the name was
// replaced meanwhile the walk starts again.
func reopen(dir int, name string, pathFd int, st *unix.Stat_t, flags int) (int, error) {
	fd, err := unix.Openat(dir, name, flags|unix.O_NOFOLLOW, 0)
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOENT) {
		return -1, errRetry // replaced by a symlink, or removed, since
	}
	if err != nil {
		return -1, err
	}
	var now unix.Stat_t
	if err := unix.Fstat(fd, &now); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if now.Dev != st.Dev || now.Ino != st.Ino {
		unix.Close(fd)
		return -1, errRetry
	}
	return fd, nil
}

// magic reports whether the symlink held by fd is a procfs "magic link"
// (/proc/PID/root, /proc/PID/fd/N ...), which the kernel resolves to an
// object rather than through its text; every symlink in procfs is treated
// as one.
func magic(fd int) bool {
	var fs unix.Statfs_t
	return unix.Fstatfs(fd, &fs) == nil && fs.Type == unix.PROC_SUPER_MAGIC
}

// readlink reads the target of the symlink held by an O_PATH descriptor.
func readlink(fd int) (string, error) {
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(fd, "", buf)
		if err != nil {
			return "", err
		}
		if n < size {
			return string(buf[:n]), nil
		}
		if size >= unix.PathMax {
			return "", unix.ENAMETOOLONG
		}
	}
}

// components splits a path on '/', dropping empty components. A trailing
// slash becomes a final "." so the last name must be a directory (and a
// symlink there is followed), as the kernel does.
func components(p string) []string {
	var out []string
	for _, c := range strings.Split(p, "/") {
		if c != "" {
			out = append(out, c)
		}
	}
	if len(out) > 0 && strings.HasSuffix(p, "/") {
		out = append(out, ".")
	}
	return out
}
