package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/shoal-dev/shoal/api/client"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// fileDeleteCmd is shoal file delete NAME/PATH...
func (a *app) fileDeleteCmd() *cobra.Command {
	return &cobra.Command{
		Use: "delete NAME/PATH...", Aliases: []string{"rm"}, Short: "Delete files, symlinks or empty directories in a container", Args: cobra.MinimumNArgs(1),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			for _, arg := range args {
				name, p, err := splitTarget(arg)
				if err != nil {
					return err
				}
				if _, err := c.Containers.DeleteFile(cmd.Context(), &shoalv1.DeleteFileRequest{Name: name, Path: p}); err != nil {
					return convert(err)
				}
			}
			return nil
		}),
	}
}

// fileEditCmd is shoal file edit NAME/PATH: the file is pulled into a
// temporary file, $EDITOR (else $VISUAL, else vi) edits it, and it is
// pushed back with the mode and owner it had, unless it did not change.
// With stdin not a terminal, stdin is the new content (as LXD).
func (a *app) fileEditCmd() *cobra.Command {
	return &cobra.Command{
		Use: "edit NAME/PATH", Short: "Edit a file of a container in $EDITOR (or replace it with stdin)", Args: cobra.ExactArgs(1),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			name, p, err := splitTarget(args[0])
			if err != nil {
				return err
			}
			var before bytes.Buffer
			h, err := c.PullFile(cmd.Context(), name, p, &before)
			if err != nil {
				return err
			}
			var after []byte
			if fi, err := os.Stdin.Stat(); err == nil && fi.Mode()&os.ModeCharDevice == 0 {
				if after, err = io.ReadAll(os.Stdin); err != nil {
					return err
				}
			} else if after, err = editInEditor(filepath.Base(p), before.Bytes()); err != nil {
				return err
			}
			if bytes.Equal(after, before.Bytes()) {
				return nil
			}
			return c.PushFile(cmd.Context(), &shoalv1.FileHeader{Name: name, Path: p, Mode: h.GetMode(), Uid: h.GetUid(), Gid: h.GetGid()}, bytes.NewReader(after))
		}),
	}
}

// editInEditor lets the user's editor change content in a temporary file.
func editInEditor(base string, content []byte) ([]byte, error) {
	editor := os.Getenv("EDITOR")
	if editor == "" {
		editor = os.Getenv("VISUAL")
	}
	if editor == "" {
		editor = "vi"
	}
	dir, err := os.MkdirTemp("", "shoal-edit-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	f := filepath.Join(dir, base)
	if err := os.WriteFile(f, content, 0o600); err != nil {
		return nil, err
	}
	// The editor may be "code --wait" or "vim -u NONE": a shell splits it.
	ed := exec.Command("sh", "-c", editor+` "$1"`, "sh", f)
	ed.Stdin, ed.Stdout, ed.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := ed.Run(); err != nil {
		return nil, fmt.Errorf("editor %s: %w (the file is unchanged)", editor, err)
	}
	return os.ReadFile(f)
}

// pullTree is file pull -r: the tree at NAME/PATH arrives as a tar stream
// and is written to dst/BASENAME when dst is a directory, else to dst
// (its parent must exist, or -p makes it), with the modes and times it
// has in the container (owners stay the local user's, as LXD's pull).
func pullTree(cmd *cobra.Command, c *client.Client, name, p, dst string, createDirs bool) error {
	if fi, err := os.Stat(dst); err == nil && fi.IsDir() {
		dst = filepath.Join(dst, path.Base(path.Clean(p)))
	} else if createDirs {
		if err := os.MkdirAll(filepath.Dir(filepath.Clean(dst)), 0o755); err != nil {
			return err
		}
	}
	if _, err := os.Lstat(dst); err == nil {
		return fmt.Errorf("file pull -r: %s exists (pull into a directory, or remove it first)", dst)
	}
	pr, pw := io.Pipe()
	errc := make(chan error, 1)
	go func() { errc <- extractTree(pr, dst) }()
	_, err := c.PullTree(cmd.Context(), name, p, pw)
	pw.CloseWithError(err)
	xerr := <-errc
	if err != nil {
		return err
	}
	return xerr
}

// extractTree writes a tar stream of one tree (its entries all under one
// top name) to dst: the top entry becomes dst. Only directories it made
// itself are written into, so an entry can never land through a symlink,
// and no name may climb out ("..") or be absolute.
func extractTree(r io.Reader, dst string) error {
	tr := tar.NewReader(r)
	made := map[string]bool{}
	type dirTime struct {
		path string
		mode os.FileMode
		t    time.Time
	}
	var dirs []dirTime
	top := ""
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("file pull -r: %w", err)
		}
		clean := path.Clean(h.Name)
		if path.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, "../") {
			return fmt.Errorf("file pull -r: entry %q escapes the tree", h.Name)
		}
		first, rest, _ := strings.Cut(clean, "/")
		if top == "" {
			top = first
		}
		if first != top {
			return fmt.Errorf("file pull -r: entry %q is outside %q", h.Name, top)
		}
		local := filepath.Join(dst, filepath.FromSlash(rest))
		if rest != "" && !made[filepath.Dir(local)] {
			return fmt.Errorf("file pull -r: entry %q comes before its directory", h.Name)
		}
		mode := os.FileMode(h.Mode & 0o777)
		if h.Mode&0o4000 != 0 {
			mode |= os.ModeSetuid
		}
		if h.Mode&0o2000 != 0 {
			mode |= os.ModeSetgid
		}
		if h.Mode&0o1000 != 0 {
			mode |= os.ModeSticky
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.Mkdir(local, 0o700); err != nil {
				return fmt.Errorf("file pull -r: %w", err)
			}
			made[local] = true
			dirs = append(dirs, dirTime{local, mode, h.ModTime})
		case tar.TypeReg:
			f, err := os.OpenFile(local, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return fmt.Errorf("file pull -r: %w", err)
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err == nil {
				err = os.Chmod(local, mode)
			}
			if err == nil {
				err = os.Chtimes(local, h.ModTime, h.ModTime)
			}
			if err != nil {
				return fmt.Errorf("file pull -r: %s: %w", local, err)
			}
		case tar.TypeSymlink:
			if err := os.Symlink(h.Linkname, local); err != nil {
				return fmt.Errorf("file pull -r: %w", err)
			}
		default:
			// fifos and device nodes are not made here (as LXD's pull).
			fmt.Fprintf(os.Stderr, "file pull -r: skipped %s (not a file, directory or symlink)\n", h.Name)
		}
	}
	// Modes of directories last (a read-only one could not be filled),
	// deepest first.
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := os.Chmod(dirs[i].path, dirs[i].mode); err != nil {
			return fmt.Errorf("file pull -r: %w", err)
		}
		_ = os.Chtimes(dirs[i].path, dirs[i].t, dirs[i].t)
	}
	if top == "" {
		return errors.New("file pull -r: the container sent nothing")
	}
	return nil
}
