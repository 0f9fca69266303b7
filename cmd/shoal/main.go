// Command shoal is the Shoal command-line client.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/shoal-dev/shoal/api/client"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}

// exitError carries a command's exit code (exec passes the remote one on).
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func run(ctx context.Context, args []string) int {
	root := newRoot()
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var ee exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	msg := strings.TrimSpace(err.Error())
	if i := strings.IndexByte(msg, '\n'); i >= 0 {
		msg = msg[:i]
	}
	fmt.Fprintln(os.Stderr, "Error:", msg)
	return 1
}

// requireSubcommands makes every command that only groups others fail,
// with a one-line error naming its subcommands, when called without a
// known one (cobra prints the help and exits 0, so a script would take
// 'shoal storage volume create ...' for a success).
func requireSubcommands(c *cobra.Command) {
	for _, sub := range c.Commands() {
		requireSubcommands(sub)
	}
	if !c.HasSubCommands() || c.Runnable() || c == c.Root() {
		return
	}
	c.Args = cobra.ArbitraryArgs
	c.RunE = func(cmd *cobra.Command, args []string) error {
		var names []string
		for _, sub := range cmd.Commands() {
			if sub.IsAvailableCommand() {
				names = append(names, sub.Name())
			}
		}
		if len(args) == 0 {
			return fmt.Errorf("%s: missing subcommand (one of: %s)", cmd.CommandPath(), strings.Join(names, ", "))
		}
		return fmt.Errorf("%s: unknown subcommand %q (one of: %s)", cmd.CommandPath(), args[0], strings.Join(names, ", "))
	}
}

type app struct {
	socket string
	remote string
	c      *client.Client
}

// client connects lazily, so --help works without a daemon.
func (a *app) client() (*client.Client, error) {
	if a.c != nil {
		return a.c, nil
	}
	remote := a.remoteName()
	var c *client.Client
	var err error
	if remote != "" && remote != "local" {
		c, err = remoteClient(remote)
	} else {
		c, err = client.Dial(a.socket)
	}
	if err != nil {
		return nil, err
	}
	a.c = c
	return c, nil
}

// remoteName is the remote the client uses: --remote, $SHOAL_REMOTE, or
// the default remote unless $SHOAL_SOCKET is set ("" or "local": the
// socket).
func (a *app) remoteName() string {
	remote := a.remote
	if remote == "" {
		remote = os.Getenv("SHOAL_REMOTE")
	}
	if remote == "" && os.Getenv("SHOAL_SOCKET") == "" {
		remote = defaultRemote()
	}
	return remote
}

// withClient adapts a command body that needs a daemon connection.
func (a *app) withClient(f func(cmd *cobra.Command, c *client.Client, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		c, err := a.client()
		if err != nil {
			return err
		}
		return f(cmd, c, args)
	}
}

// follow waits for an operation, showing its progress.
func follow(cmd *cobra.Command, c *client.Client, op *shoalv1.Operation) (*shoalv1.Operation, error) {
	p := newProgress()
	defer p.finish()
	return c.Wait(cmd.Context(), op, p.update)
}

func newRoot() *cobra.Command {
	a := &app{}
	root := &cobra.Command{
		Use:           "shoal",
		Short:         "Shoal: clustered system containers",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	def := os.Getenv("SHOAL_SOCKET")
	if def == "" {
		def = client.DefaultSocket
	}
	root.PersistentFlags().StringVar(&a.socket, "socket", def, "daemon socket or address (env SHOAL_SOCKET)")
	root.PersistentFlags().StringVar(&a.remote, "remote", "", "remote cluster to use (env SHOAL_REMOTE; see shoal remote)")
	root.AddCommand(
		a.launchCmd(true), a.launchCmd(false), a.listCmd(), a.infoCmd(), a.execCmd(), a.fileCmd(),
		a.snapshotCmd(), a.copyCmd(), a.publishCmd(), a.imageCmd(), a.configCmd(),
		a.stateCmd("start", "Start containers"), a.stateCmd("stop", "Stop containers"),
		a.stateCmd("restart", "Restart containers"), a.stateCmd("freeze", "Freeze containers"),
		a.stateCmd("unfreeze", "Unfreeze containers"),
		a.deleteCmd(), a.consoleCmd(), a.storageCmd(), a.networkCmd(), a.operationCmd(), a.monitorCmd(),
		a.clusterCmd(), a.remoteCmd(), a.moveCmd(), a.profileCmd(), a.versionCmd(),
		a.exportCmd(), a.importCmd(), a.renameCmd(),
	)
	// The completion command now rather than at Execute, so that
	// requireSubcommands makes a bare "shoal completion" an error too.
	root.InitDefaultCompletionCmd()
	a.addNameCompletion(root)
	requireSubcommands(root)
	return root
}
