package runtime

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/shoal-dev/shoal/node/images"
)

// Application containers. A container made from an OCI image has no init
// of its own: its root filesystem carries the image's command
// (images.AppConfigPath, written by the OCI import). Define reads it, and
// the container then runs as LXC's application containers do (lxc-execute,
// LXC's lxc-oci template): LXC's minimal init is pid 1 (it reaps orphans,
// forwards signals and, on the halt signal, sends SIGTERM to every process
// and ends), the image's Entrypoint+Cmd is its only child with the image's
// Env, WorkingDir and User, and the container stops when that command
// exits. Start uses lxc-execute instead of lxc-start for such a container.

// appItems renders the LXC keys of an application container.
func appItems(a *images.AppConfig) [][2]string {
	q := make([]string, len(a.Args))
	for i, arg := range a.Args {
		q[i] = quoteExecArg(arg)
	}
	// LXC strips one pair of quotes around a whole value, then splits
	// lxc.execute.cmd on spaces outside quotes.
	items := [][2]string{{"lxc.execute.cmd", "'" + strings.Join(q, " ") + "'"}}
	for _, e := range a.Env {
		items = append(items, [2]string{"lxc.environment", e})
	}
	cwd := a.Cwd
	if cwd == "" {
		cwd = "/"
	}
	items = append(items,
		[2]string{"lxc.init.cwd", cwd},
		[2]string{"lxc.init.uid", strconv.FormatUint(uint64(a.UID), 10)},
		[2]string{"lxc.init.gid", strconv.FormatUint(uint64(a.GID), 10)})
	return items
}

// quoteExecArg quotes one argument of lxc.execute.cmd: in double quotes,
// or single quotes when it holds a double quote (AppConfig.Validate
// refuses arguments with both).
func quoteExecArg(s string) string {
	if strings.Contains(s, `"`) {
		return "'" + s + "'"
	}
	return `"` + s + `"`
}

// loadApp fills spec.App from the root filesystem when the caller did not.
func loadApp(spec *Spec) error {
	if spec.App != nil {
		return spec.App.Validate()
	}
	app, err := images.ReadAppConfig(spec.Rootfs)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrInvalid, spec.Name, err)
	}
	spec.App = app
	return nil
}
