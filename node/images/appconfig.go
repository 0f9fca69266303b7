package images

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/shoal-dev/shoal/internal/inroot"
)

// AppConfigPath is where, inside a root filesystem, an image made from an
// OCI (application) image keeps what its containers run: the OCI config's
// Entrypoint and Cmd, Env, WorkingDir and User. The runtime reads it from
// the container's own root filesystem when it defines the container, so
// copies, moves, backups and images published from the container keep it.
const AppConfigPath = ".shoal/oci.json"

// AppConfig is what a container made from an OCI image runs as its
// application, under LXC's minimal init.
type AppConfig struct {
	// Args is the command: Entrypoint followed by Cmd.
	Args []string `json:"args"`
	// Env is KEY=VALUE entries (PATH always among them).
	Env []string `json:"env"`
	// Cwd is the absolute working directory ("/" by default).
	Cwd string `json:"cwd"`
	// UID and GID are numeric, as the container sees them.
	UID uint32 `json:"uid"`
	GID uint32 `json:"gid"`
}

// maxAppConfig bounds the file ReadAppConfig reads.
const maxAppConfig = 1 << 20

// Validate checks that every value fits on one LXC configuration line and
// can be quoted for lxc.execute.cmd. The file lives in the container's
// root filesystem, so its root may have written anything there.
func (a AppConfig) Validate() error {
	if len(a.Args) == 0 || a.Args[0] == "" {
		return fmt.Errorf("%w: %s: no command", ErrInvalid, AppConfigPath)
	}
	bad := func(s string) bool { return strings.ContainsAny(s, "\n\r\x00") }
	for _, arg := range a.Args {
		if bad(arg) {
			return fmt.Errorf("%w: %s: a line break or NUL in argument %q", ErrInvalid, AppConfigPath, arg)
		}
		if strings.Contains(arg, `"`) && strings.Contains(arg, `'`) {
			return fmt.Errorf("%w: %s: argument %q holds both quote characters, which LXC cannot pass", ErrInvalid, AppConfigPath, arg)
		}
	}
	for _, e := range a.Env {
		k, _, ok := strings.Cut(e, "=")
		if !ok || k == "" || bad(e) || strings.ContainsAny(k, " \t") {
			return fmt.Errorf("%w: %s: environment entry %q is not KEY=VALUE on one line", ErrInvalid, AppConfigPath, e)
		}
	}
	if a.Cwd != "" && (!path.IsAbs(a.Cwd) || bad(a.Cwd)) {
		return fmt.Errorf("%w: %s: working directory %q is not an absolute path", ErrInvalid, AppConfigPath, a.Cwd)
	}
	return nil
}

// ReadAppConfig reads rootfs's AppConfig, resolving the path inside
// rootfs (a symlink cannot lead out). It returns nil, nil when there is
// none (or no rootfs): a system container, whose init is /sbin/init.
func ReadAppConfig(rootfs string) (*AppConfig, error) {
	root, err := unix.Open(rootfs, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil, nil // no root filesystem (yet): nothing to read
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", AppConfigPath, err)
	}
	defer unix.Close(root)
	// O_NONBLOCK: a fifo put there must not hang the daemon; only a
	// regular file is read.
	fd, err := inroot.Open(root, AppConfigPath, unix.O_RDONLY|unix.O_NONBLOCK, inroot.InRoot)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", AppConfigPath, err)
	}
	f := os.NewFile(uintptr(fd), AppConfigPath)
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is not a regular file", ErrInvalid, AppConfigPath)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxAppConfig+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", AppConfigPath, err)
	}
	if len(b) > maxAppConfig {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrInvalid, AppConfigPath, maxAppConfig)
	}
	var a AppConfig
	if err := json.Unmarshal(b, &a); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrInvalid, AppConfigPath, err)
	}
	if err := a.Validate(); err != nil {
		return nil, err
	}
	return &a, nil
}
