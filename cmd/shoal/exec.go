package main

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/shoal-dev/shoal/api/client"
)

func (a *app) execCmd() *cobra.Command {
	var tty, noTTY bool
	var env []string
	var cwd string
	var user, group uint32
	cmd := &cobra.Command{
		Use:   "exec NAME [flags] -- COMMAND [ARGS...]",
		Short: "Run a command in a container (exit code and stdout/stderr pass through)",
		Args:  cobra.MinimumNArgs(2),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			opts := client.ExecOptions{Env: env, Cwd: cwd, User: user, Group: group, Stdout: os.Stdout, Stderr: os.Stderr}
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
				// As lxc exec: the terminal type travels with the session.
				if t := os.Getenv("TERM"); t != "" && !hasEnv(env, "TERM") {
					opts.Env = append([]string{"TERM=" + t}, opts.Env...)
				}
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
			if !useTTY {
				// As lxc exec without a terminal: the signals this client
				// gets go to the command (on a terminal, ^C travels as a
				// byte). The third SIGINT in a row gives up on the command.
				sigs := make(chan os.Signal, 4)
				signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2)
				defer signal.Stop(sigs)
				fwd := make(chan int, 4)
				opts.Signals = fwd
				// The signals are the command's now, not the end of this
				// client (main's context would end at SIGINT or SIGTERM).
				ctx, cancel := context.WithCancel(context.WithoutCancel(cmd.Context()))
				defer cancel()
				go func() {
					ints := 0
					for sig := range sigs {
						if sig == syscall.SIGINT {
							if ints++; ints == 3 {
								cancel()
								return
							}
						}
						select {
						case fwd <- int(sig.(syscall.Signal)):
						default:
						}
					}
				}()
				cmd.SetContext(ctx)
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
	cmd.Flags().Uint32Var(&user, "user", 0, "user ID to run the command as (numeric, as the container sees it)")
	cmd.Flags().Uint32Var(&group, "group", 0, "group ID to run the command as (numeric, as the container sees it)")
	return cmd
}

// hasEnv reports whether env (KEY=VALUE entries) sets key.
func hasEnv(env []string, key string) bool {
	for _, e := range env {
		if strings.HasPrefix(e, key+"=") {
			return true
		}
	}
	return false
}
