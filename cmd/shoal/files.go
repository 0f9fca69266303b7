package main

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/shoal-dev/shoal/api/client"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// splitTarget splits "NAME/PATH" into the container name and an absolute path.
func splitTarget(arg string) (string, string, error) {
	name, path, ok := strings.Cut(arg, "/")
	if !ok || name == "" || path == "" {
		return "", "", fmt.Errorf("%q: want NAME/PATH (e.g. c1/root/file)", arg)
	}
	return name, "/" + path, nil
}

// pushPlan is what a push does in the container: dirOps, for the shell
// script pushDirsScript (triples: p -, DIR for mkdir -p; d MODE DIR for a
// directory of the tree; l TARGET PATH for a symlink), then files through
// PushFile.
type pushPlan struct {
	dirOps []string
	files  []pushFile
}

type pushFile struct {
	local, remote string
	mode          uint32
}

// pushDirsScript makes directories and symlinks: PushFile writes regular
// files only, into directories that exist, so the rest goes through exec
// (and needs the container running). $1 is a directory that must exist
// (empty: none), $2 the owner uid:gid (empty: root's, as made).
const pushDirsScript = `set -e
check=$1; own=$2; shift 2
if [ -n "$check" ] && [ ! -d "$check" ]; then echo "$check: no such directory in the container (-p creates it)" >&2; exit 3; fi
while [ $# -ge 3 ]; do
	case $1 in
	p) mkdir -p "$3" ;;
	d) mkdir -p "$3"; chmod "$2" "$3"; [ -z "$own" ] || chown "$own" "$3" ;;
	l) ln -sfn -- "$2" "$3"; [ -z "$own" ] || chown -h "$own" "$3" ;;
	esac
	shift 3
done`

// unixPerm is a local file's permission and special bits as chmod and
// FileHeader.mode take them.
func unixPerm(m fs.FileMode) uint32 {
	out := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		out |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		out |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		out |= 0o1000
	}
	return out
}

// planPush plans pushing the local src to the container path dst. Without
// recursive src must be a file and dst is its path (or the directory it
// goes in, ending in /). With recursive a directory src is copied, as in
// LXD, to dst/BASENAME: its directories (with their modes), files and
// symlinks (their targets as they are), never following one; anything
// else in the tree is refused before anything is sent. mode, when not
// nil, replaces the files' modes. createDirs makes the parent (or dst,
// for a tree) first; without it that directory must exist.
func planPush(src, dst string, recursive, createDirs bool, mode *uint32) (pushPlan, error) {
	var plan pushPlan
	fi, err := os.Stat(src)
	if err != nil {
		return plan, err
	}
	if !fi.IsDir() {
		if strings.HasSuffix(dst, "/") {
			dst += filepath.Base(src)
		}
		m := unixPerm(fi.Mode())
		if mode != nil {
			m = *mode
		}
		plan.files = append(plan.files, pushFile{src, dst, m})
		if createDirs {
			plan.dirOps = append(plan.dirOps, "p", "-", path.Dir(dst))
		}
		return plan, nil
	}
	if !recursive {
		return plan, fmt.Errorf("%s is a directory (-r pushes a directory tree)", src)
	}
	abs, err := filepath.Abs(src)
	if err != nil {
		return plan, err
	}
	base := filepath.Base(abs)
	if base == "/" || base == "." {
		return plan, fmt.Errorf("%s: push the directories in it, not the root", src)
	}
	parent := path.Clean(dst)
	if createDirs {
		plan.dirOps = append(plan.dirOps, "p", "-", parent)
	}
	root := path.Join(parent, base)
	// Walk the directory itself even when src is a symlink to it.
	walkRoot, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return plan, err
	}
	err = filepath.WalkDir(walkRoot, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(walkRoot, p)
		if err != nil {
			return err
		}
		remote := path.Join(root, filepath.ToSlash(rel))
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch t := info.Mode(); {
		case t.IsDir():
			plan.dirOps = append(plan.dirOps, "d", fmt.Sprintf("%04o", unixPerm(t)), remote)
		case t&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			plan.dirOps = append(plan.dirOps, "l", target, remote)
		case t.IsRegular():
			m := unixPerm(t)
			if mode != nil {
				m = *mode
			}
			plan.files = append(plan.files, pushFile{p, remote, m})
		default:
			return fmt.Errorf("%s: not a file, directory or symlink (%s): cannot be pushed", p, t.Type())
		}
		return nil
	})
	return plan, err
}

// runDirOps runs the plan's directory steps in the container, in batches
// that keep the command line short. check is the directory that must
// exist first ("" for none).
func runDirOps(cmd *cobra.Command, c *client.Client, name, check, owner string, ops []string) error {
	const batch = 3 * 300
	for len(ops) > 0 || check != "" {
		n := min(batch, len(ops))
		argv := append([]string{"sh", "-c", pushDirsScript, "sh", check, owner}, ops[:n]...)
		ops, check = ops[n:], ""
		var stderr bytes.Buffer
		code, err := c.Exec(cmd.Context(), name, argv, client.ExecOptions{Stdout: &stderr, Stderr: &stderr})
		if err != nil {
			return fmt.Errorf("file push: directories and symlinks in %s are made with exec, which needs the container running: %w", name, err)
		}
		if code != 0 {
			msg := strings.TrimSpace(stderr.String())
			if i := strings.IndexByte(msg, '\n'); i >= 0 {
				msg = msg[:i]
			}
			return fmt.Errorf("file push: %s: %s (exit %d)", name, msg, code)
		}
	}
	return nil
}

func (a *app) fileCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "file", Short: "Move files in and out of containers"}
	var mode string
	var uid, gid int
	var recursive, createDirs bool
	push := &cobra.Command{
		Use:   "push SOURCE... NAME/PATH",
		Short: "Copy local files (or, with -r, directory trees) into a container",
		Long: `Copy local files into a container.

NAME/PATH is the file's path, or a directory ending in / (it must, with
several sources). With -r a directory is copied with its files, directories
and symlinks to NAME/PATH/BASENAME, as in LXD. -p makes the missing parent
directories. Files are written whether the container runs or not;
directories and symlinks (-r, -p) are made with exec and need it running.`,
		Example: `  shoal file push ./app.conf c1/etc/app.conf
  shoal file push -r ./site c1/var/www/      # c1's /var/www/site
  shoal file push -p ./key c1/root/.ssh/authorized_keys`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			srcs, target := args[:len(args)-1], args[len(args)-1]
			name, dst, err := splitTarget(target)
			if err != nil {
				return err
			}
			var m *uint32
			if mode != "" {
				v, err := strconv.ParseUint(mode, 8, 32)
				if err != nil || v > 0o7777 {
					return fmt.Errorf("--mode: %q is not an octal mode (e.g. 0644)", mode)
				}
				mv := uint32(v)
				m = &mv
			}
			if uid < 0 || gid < 0 {
				return fmt.Errorf("--uid/--gid: %d:%d: ids are not negative", uid, gid)
			}
			if len(srcs) > 1 && !strings.HasSuffix(target, "/") {
				return fmt.Errorf("%q: with several sources, NAME/PATH is a directory and ends in /", target)
			}
			var plans []pushPlan
			for _, src := range srcs {
				if recursive && !strings.HasSuffix(dst, "/") {
					dst += "/"
				}
				p, err := planPush(src, dst, recursive, createDirs, m)
				if err != nil {
					return err
				}
				plans = append(plans, p)
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			owner := ""
			if uid != 0 || gid != 0 {
				owner = fmt.Sprintf("%d:%d", uid, gid)
			}
			for _, p := range plans {
				if len(p.dirOps) > 0 {
					check := ""
					if recursive && !createDirs {
						check = path.Clean(dst)
					}
					if err := runDirOps(cmd, c, name, check, owner, p.dirOps); err != nil {
						return err
					}
				}
				for _, f := range p.files {
					if err := pushOne(cmd, c, name, f, uid, gid); err != nil {
						return err
					}
				}
			}
			return nil
		},
	}
	push.Flags().StringVar(&mode, "mode", "", "file mode in octal (default: the local file's)")
	push.Flags().IntVar(&uid, "uid", 0, "owner uid inside the container")
	push.Flags().IntVar(&gid, "gid", 0, "owner gid inside the container")
	push.Flags().BoolVarP(&recursive, "recursive", "r", false, "push directory trees")
	push.Flags().BoolVarP(&createDirs, "create-dirs", "p", false, "make the missing parent directories")
	var pullCreate, pullRecursive bool
	pull := &cobra.Command{
		Use: "pull NAME/PATH TARGET", Short: "Copy a file (or, with -r, a directory tree) out of a container (TARGET may be a directory or - for stdout)", Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, path, err := splitTarget(args[0])
			if err != nil {
				return err
			}
			dst := args[1]
			if pullRecursive {
				if dst == "-" {
					return fmt.Errorf("file pull -r: the target is a local directory, not -")
				}
				c, err := a.client()
				if err != nil {
					return err
				}
				return pullTree(cmd, c, name, path, dst, pullCreate)
			}
			if pullCreate && dst != "-" {
				dir := filepath.Dir(dst)
				if strings.HasSuffix(dst, "/") {
					dir = dst
				}
				if err := os.MkdirAll(dir, 0o755); err != nil {
					return err
				}
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			if dst == "-" {
				_, err := c.PullFile(cmd.Context(), name, path, os.Stdout)
				return err
			}
			if fi, err := os.Stat(dst); err == nil && fi.IsDir() {
				dst = filepath.Join(dst, filepath.Base(path))
			}
			tmp, err := os.CreateTemp(filepath.Dir(dst), ".shoal-pull-*")
			if err != nil {
				return err
			}
			defer os.Remove(tmp.Name())
			h, err := c.PullFile(cmd.Context(), name, path, tmp)
			if cerr := tmp.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
			if h != nil {
				os.Chmod(tmp.Name(), os.FileMode(h.GetMode()&0o777))
			}
			return os.Rename(tmp.Name(), dst)
		},
	}
	pull.Flags().BoolVarP(&pullCreate, "create-dirs", "p", false, "make the missing local parent directories")
	pull.Flags().BoolVarP(&pullRecursive, "recursive", "r", false, "pull a directory tree (to TARGET/BASENAME when TARGET is a directory, else to TARGET), keeping modes")
	cmd.AddCommand(push, pull, a.fileDeleteCmd(), a.fileEditCmd())
	return cmd
}

// pushOne pushes one local file.
func pushOne(cmd *cobra.Command, c *client.Client, name string, f pushFile, uid, gid int) error {
	in, err := os.Open(f.local)
	if err != nil {
		return err
	}
	defer in.Close()
	return c.PushFile(cmd.Context(), &shoalv1.FileHeader{Name: name, Path: f.remote, Mode: f.mode, Uid: int32(uid), Gid: int32(gid)}, in)
}
