// Package runtime is Shoal's thin, typed wrapper over go-lxc: it renders one
// LXC configuration from a Spec, and starts, stops, freezes, inspects,
// limits and executes commands in system containers, and reads and writes
// files in their root filesystems.
//
// Each container's LXC configuration lives in Shoal's own config directory
// (<configDir>/<name>.conf) and is loaded with LoadConfigFile, never at
// <lxcpath>/<name>/config (go-lxc's Migrate refuses that layout); the
// lxcpath holds only LXC's runtime state, the LXC log and the console log.
//
// Process-wide effects of New, which a daemon embedding this package
// should know about: it marks every inherited descriptor above 2
// close-on-exec (so none leaks into containers, which would break CRIU),
// and makes the process a child subreaper so that it can reap the
// "[lxc monitor]" processes of the containers it starts.
//
// Start runs lxc-start (liblxc's in-process daemonized start moves the
// calling process into the container's monitor cgroups); Stop, Freeze,
// State and non-interactive Exec use liblxc in-process; interactive (TTY)
// Exec runs lxc-attach. Checkpoint and Restore (CRIU, for live moves and
// stateful snapshots) run lxc-checkpoint, with extra CRIU flags passed in
// the checkpoint directory (CRIUArgsFile) for Shoal's criu wrapper; the
// post-copy pieces (a dump serving pages, the lazy-pages daemon) are in
// lazy.go.
//
// The package owns the LXC containers it is told about and nothing else: it
// does not create root filesystems, bridges or images.
package runtime
