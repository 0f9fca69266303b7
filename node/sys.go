package node

import (
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/shoal-dev/shoal/storage"
)

func freeBytes(path string) int64 {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0
	}
	return int64(st.Bavail) * st.Bsize
}

func diskUsed(path string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, err
	}
	return int64(st.Blocks-st.Bfree) * st.Bsize, nil
}

// poolDir is a directory inside a pool's filesystem, for statfs: the
// directory its volumes live in (Path takes a volume name; "" is not one).
func poolDir(d storage.Driver) string {
	return filepath.Dir(d.Path("containers/statfs"))
}
