package inroot

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// FuzzOpen opens arbitrary paths (as `shoal file push/pull` and image
// unpack pass them) in a tree full of escaping, absolute, looping and
// dangling symlinks, in both scopes, with openat2 and with the walk.
// Properties: whatever opens is the root or below it (the kernel's own
// name for the descriptor says so); under Beneath nothing resolves through
// an absolute step or above the root without failing; errors are errnos
// or ErrEscape, never a panic; both implementations agree on success.
func FuzzOpen(f *testing.F) {
	root, fd := tree(f)
	for _, p := range []string{"", "/", "a/b/f", "/a/b/f", "abs/f", "a/rel/f", "a/up/etc/passwd", "esc/passwd", "absesc/passwd",
		"loop", "dangling", "a/b/flink", "a/fifo", "../../etc/passwd", "a/../../etc", "a/b/f/", "a//b/./f", "abs/../../..",
		"a/up/a/up/a/up/absesc", strings.Repeat("a/rel/../", 20) + "b/f", "a\x00b", "/proc/self/root/etc/passwd"} {
		f.Add(p, false)
		f.Add(p, true)
	}
	f.Fuzz(func(t *testing.T, p string, beneath bool) {
		scope := InRoot
		if beneath {
			scope = Beneath
		}
		var ok [2]bool
		for i, walk := range []bool{false, true} {
			prev := ForceWalk(walk)
			got, err := Open(fd, p, unix.O_PATH, scope)
			ForceWalk(prev)
			if err != nil {
				var errno unix.Errno
				if !errors.As(err, &errno) && !errors.Is(err, ErrEscape) {
					t.Fatalf("Open(%q, %v, walk=%v): %v is neither an errno nor ErrEscape", p, scope, walk, err)
				}
				continue
			}
			ok[i] = true
			where, lerr := os.Readlink("/proc/self/fd/" + strconv.Itoa(got))
			unix.Close(got)
			if lerr != nil {
				t.Fatal(lerr)
			}
			if where != root && !strings.HasPrefix(where, root+"/") {
				t.Fatalf("Open(%q, %v, walk=%v) opened %s, outside %s", p, scope, walk, where, root)
			}
		}
		if ok[0] != ok[1] {
			t.Fatalf("Open(%q, %v): openat2 opened=%v, walk opened=%v", p, scope, ok[0], ok[1])
		}
	})
}
