package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/shoal-dev/shoal/api/client"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

func (a *app) execCmd() *cobra.Command {
	var tty, noTTY bool
	var env []string
	var cwd string
	cmd := &cobra.Command{
		Use:   "exec NAME [flags] -- COMMAND [ARGS...]",
		Short: "Run a command in a container (exit code and stdout/stderr pass through)",
		Args:  cobra.MinimumNArgs(2),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			opts := client.ExecOptions{Env: env, Cwd: cwd, Stdout: os.Stdout, Stderr: os.Stderr}
			stdinTTY := term.IsTerminal(int(os.Stdin.Fd()))
			if tty && noTTY {
				return errors.New("-t and -T: choose one")
			}
			useTTY := tty || (!noTTY && stdinTTY && term.IsTerminal(int(os.Stdout.Fd())))
			if !stdinTTY || useTTY {
				opts.Stdin = os.Stdin
			}
			if useTTY {
				opts.TTY = true
				if stdinTTY {
					if w, h, err := term.GetSize(int(os.Stdout.Fd())); err == nil {
						opts.Cols, opts.Rows = uint16(w), uint16(h)
					}
					old, err := term.MakeRaw(int(os.Stdin.Fd()))
					if err == nil {
						defer term.Restore(int(os.Stdin.Fd()), old)
					}
					resize := make(chan [2]uint16, 1)
					winch := make(chan os.Signal, 1)
					signal.Notify(winch, syscall.SIGWINCH)
					defer signal.Stop(winch)
					go func() {
						for range winch {
							if w, h, err := term.GetSize(int(os.Stdout.Fd())); err == nil {
								select {
								case resize <- [2]uint16{uint16(h), uint16(w)}:
								default:
								}
							}
						}
					}()
					opts.Resize = resize
				}
			}
			code, err := c.Exec(cmd.Context(), args[0], args[1:], opts)
			if err != nil {
				return err
			}
			if code != 0 {
				return exitError{code}
			}
			return nil
		}),
	}
	cmd.Flags().BoolVarP(&tty, "force-interactive", "t", false, "allocate a pseudo-terminal (interactive)")
	cmd.Flags().BoolVarP(&noTTY, "force-noninteractive", "T", false, "never allocate a pseudo-terminal")
	cmd.Flags().StringArrayVar(&env, "env", nil, "environment KEY=VALUE (repeatable)")
	cmd.Flags().StringVar(&cwd, "cwd", "", "working directory in the container")
	return cmd
}

// splitTarget splits "NAME/PATH" into the container name and an absolute path.
func splitTarget(arg string) (string, string, error) {
	name, path, ok := strings.Cut(arg, "/")
	if !ok || name == "" || path == "" {
		return "", "", fmt.Errorf("%q: want NAME/PATH (e.g. c1/root/file)", arg)
	}
	return name, "/" + path, nil
}

func (a *app) fileCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "file", Short: "Move files in and out of containers"}
	var mode string
	var uid, gid int
	push := &cobra.Command{
		Use: "push SOURCE NAME/PATH", Short: "Copy a local file into a container", Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, path, err := splitTarget(args[1])
			if err != nil {
				return err
			}
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			fi, err := f.Stat()
			if err != nil {
				return err
			}
			if fi.IsDir() {
				return fmt.Errorf("%s is a directory (only files can be pushed)", args[0])
			}
			if strings.HasSuffix(args[1], "/") {
				path += filepath.Base(args[0])
			}
			m := uint32(fi.Mode().Perm())
			if mode != "" {
				v, err := strconv.ParseUint(mode, 8, 32)
				if err != nil || v > 0o7777 {
					return fmt.Errorf("--mode: %q is not an octal mode (e.g. 0644)", mode)
				}
				m = uint32(v)
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			return c.PushFile(cmd.Context(), &shoalv1.FileHeader{Name: name, Path: path, Mode: m, Uid: int32(uid), Gid: int32(gid)}, f)
		},
	}
	push.Flags().StringVar(&mode, "mode", "", "file mode in octal (default: the local file's)")
	push.Flags().IntVar(&uid, "uid", 0, "owner uid inside the container")
	push.Flags().IntVar(&gid, "gid", 0, "owner gid inside the container")
	pull := &cobra.Command{
		Use: "pull NAME/PATH TARGET", Short: "Copy a file out of a container (TARGET may be a directory or - for stdout)", Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, path, err := splitTarget(args[0])
			if err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			if args[1] == "-" {
				_, err := c.PullFile(cmd.Context(), name, path, os.Stdout)
				return err
			}
			dst := args[1]
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
	cmd.AddCommand(push, pull)
	return cmd
}
