package main

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/shoal-dev/shoal/api/client"
	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/cluster/ha"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// parseKV parses KEY=VALUE arguments; field names the flag or argument.
func parseKV(field string, kvs []string) (map[string]string, error) {
	out := map[string]string{}
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%s: %q is not KEY=VALUE", field, kv)
		}
		out[k] = v
	}
	return out, nil
}

func (a *app) launchCmd(start bool) *cobra.Command {
	var cfg []string
	var pool, target, netName string
	var profiles []string
	var noProfiles bool
	use, short := "launch IMAGE NAME", "Create and start a container"
	if !start {
		use, short = "init IMAGE NAME", "Create a container without starting it"
	}
	cmd := &cobra.Command{
		Use: use, Short: short, Args: cobra.ExactArgs(2),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			conf, err := parseKV("-c", cfg)
			if err != nil {
				return err
			}
			image := args[0]
			srv, ref, err := parseImageRef(image)
			if err != nil {
				return err
			}
			if srv != nil {
				// From an image server: copied into the cluster first (once).
				if image, err = pullImage(cmd, c, srv, ref, nil, false); err != nil {
					return err
				}
			}
			resp, err := c.Containers.CreateContainer(cmd.Context(), &shoalv1.CreateContainerRequest{
				Name: args[1], Image: image, Config: conf, NoStart: !start, Pool: pool, Target: target, Network: netName,
				Profiles: profiles, NoProfiles: noProfiles,
			})
			if err != nil {
				return convert(err)
			}
			_, err = follow(cmd, c, resp.GetOperation())
			return err
		}),
	}
	cmd.Flags().StringArrayVarP(&cfg, "config", "c", nil, "config KEY=VALUE (repeatable)")
	cmd.Flags().StringVarP(&pool, "storage", "s", "", "storage pool")
	cmd.Flags().StringVar(&target, "target", "", "cluster member to run it on (default: the scheduler picks)")
	cmd.Flags().StringVarP(&netName, "network", "n", "", "network eth0 joins (default: the default network)")
	cmd.Flags().StringArrayVarP(&profiles, "profile", "p", nil, "profile to apply (repeatable, in order; default: default)")
	cmd.Flags().BoolVar(&noProfiles, "no-profiles", false, "apply no profile")
	return cmd
}

func (a *app) infoCmd() *cobra.Command {
	var format, target string
	var resources bool
	cmd := &cobra.Command{
		Use: "info NAME | info --resources [--target MEMBER]", Short: "Show a container's state and usage, or (--resources) a member's CPUs, memory, pools and interfaces", Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkFormat(format); err != nil {
				return err
			}
			if resources {
				if len(args) > 0 {
					return fmt.Errorf("info --resources describes a member (--target MEMBER), not a container: drop %q", args[0])
				}
				return a.showResources(cmd, os.Stdout, target, format)
			}
			if target != "" {
				return fmt.Errorf("--target goes with --resources")
			}
			if len(args) == 0 {
				return fmt.Errorf("info: a container NAME, or --resources")
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			resp, err := c.Containers.GetContainer(cmd.Context(), &shoalv1.GetContainerRequest{Name: args[0]})
			if err != nil {
				return convert(err)
			}
			if format != "table" {
				return printData(os.Stdout, format, resp.GetContainer())
			}
			ct, st := resp.GetContainer().GetContainer(), resp.GetContainer().GetState()
			fmt.Printf("Name: %s\nStatus: %s\nNode: %s\nImage: %s\nCreated: %s\n", ct.GetName(), strings.ToUpper(st.GetStatus()),
				ct.GetNode(), ct.GetImageFingerprint(), since(ct.GetCreatedAtUnixNano()))
			if st.GetPid() > 0 {
				fmt.Printf("PID: %d\nProcesses: %d\n", st.GetPid(), st.GetProcesses())
			}
			fmt.Printf("Addresses:\n  eth0: %s (hwaddr %s)\n", strings.Join(st.GetIpv4(), ", "), ct.GetHwaddr())
			fmt.Printf("Resources:\n  Memory: %s\n  CPU: %.2fs\n  Disk: %s\n", humanBytes(st.GetMemoryBytes()),
				float64(st.GetCpuNanoseconds())/1e9, humanBytes(st.GetDiskBytes()))
			if len(ct.GetSnapshots()) > 0 {
				fmt.Println("Snapshots:")
				for _, sn := range ct.GetSnapshots() {
					fmt.Printf("  %s (%s)\n", sn.GetName(), since(sn.GetCreatedAtUnixNano()))
				}
			}
			if ha.PolicyOf(cluster.ExpandedConfig(ct)).Enabled {
				// Which replicas' members are away (a failure here only
				// loses that remark).
				away := map[string]string{}
				if ms, err := c.Cluster.ListMembers(cmd.Context(), &shoalv1.ListMembersRequest{}); err == nil {
					for _, m := range ms.GetMembers() {
						if m.GetStatus() != "online" {
							away[m.GetName()] = m.GetStatus()
						}
					}
				}
				fmt.Println(haLine(ct, away, time.Now()))
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&format, "format", "f", "table", "output format: "+formats)
	cmd.Flags().BoolVar(&resources, "resources", false, "show a member's hardware: CPUs, memory, storage pools, network interfaces")
	cmd.Flags().StringVar(&target, "target", "", "member whose resources to show (with --resources; default: the one called)")
	return cmd
}

var actions = map[string]shoalv1.StateAction{
	"start": shoalv1.StateAction_STATE_ACTION_START, "stop": shoalv1.StateAction_STATE_ACTION_STOP,
	"restart": shoalv1.StateAction_STATE_ACTION_RESTART, "freeze": shoalv1.StateAction_STATE_ACTION_FREEZE,
	"unfreeze": shoalv1.StateAction_STATE_ACTION_UNFREEZE,
}

// allWants is the status a container has for action --all to act on it.
var allWants = map[string][]string{
	"start": {"Stopped"}, "stop": {"Running", "Frozen"}, "restart": {"Running"},
	"freeze": {"Running"}, "unfreeze": {"Frozen"},
}

func (a *app) stateCmd(action, short string) *cobra.Command {
	var force, all bool
	var timeout int
	cmd := &cobra.Command{
		Use: action + " NAME... | --all", Short: short, Args: cobra.ArbitraryArgs,
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			if all && len(args) > 0 {
				return fmt.Errorf("--all and container names: give one or the other")
			}
			if !all && len(args) == 0 {
				return fmt.Errorf("%s: give container names, or --all", action)
			}
			names := args
			if all {
				resp, err := c.Containers.ListContainers(cmd.Context(), &shoalv1.ListContainersRequest{})
				if err != nil {
					return convert(err)
				}
				for _, ct := range resp.GetContainers() {
					if slices.Contains(allWants[action], ct.GetState().GetStatus()) {
						names = append(names, ct.GetContainer().GetName())
					}
				}
			}
			return eachContainer(action, names, func(name string) error {
				_, err := c.Containers.ChangeContainerState(cmd.Context(), &shoalv1.ChangeContainerStateRequest{
					Name: name, Action: actions[action], Force: force, TimeoutSeconds: int32(timeout),
				})
				return convert(err)
			})
		}),
	}
	cmd.Flags().BoolVar(&all, "all", false, fmt.Sprintf("every container whose state is %s", strings.ToLower(strings.Join(allWants[action], " or "))))
	if action == "stop" || action == "restart" {
		cmd.Flags().BoolVarP(&force, "force", "f", false, "kill instead of a clean shutdown")
		cmd.Flags().IntVar(&timeout, "timeout", 30, "seconds to wait for a clean shutdown before killing")
	}
	return cmd
}

// eachContainer runs do for every name, going on after a failure. One
// failure is returned as it is; several are printed one a line on stderr
// and summed up in the error.
func eachContainer(action string, names []string, do func(name string) error) error {
	var failed []string
	var errs []error
	for _, name := range names {
		if err := do(name); err != nil {
			failed, errs = append(failed, name), append(errs, err)
		}
	}
	switch len(errs) {
	case 0:
		return nil
	case 1:
		if len(names) == 1 {
			return errs[0]
		}
		return fmt.Errorf("%s %s: %w", action, failed[0], errs[0])
	}
	for i, err := range errs {
		fmt.Fprintf(os.Stderr, "%s %s: %v\n", action, failed[i], firstLine(err))
	}
	return fmt.Errorf("%s: %d of %d containers failed (%s)", action, len(errs), len(names), strings.Join(failed, ", "))
}

func firstLine(err error) string {
	msg := strings.TrimSpace(err.Error())
	if i := strings.IndexByte(msg, '\n'); i >= 0 {
		msg = msg[:i]
	}
	return msg
}

func (a *app) deleteCmd() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use: "delete NAME...", Aliases: []string{"rm"}, Short: "Delete containers", Args: cobra.MinimumNArgs(1),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			for _, name := range args {
				if _, err := c.Containers.DeleteContainer(cmd.Context(), &shoalv1.DeleteContainerRequest{Name: name, Force: force}); err != nil {
					return convert(err)
				}
			}
			return nil
		}),
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "delete even if running")
	return cmd
}

func (a *app) copyCmd() *cobra.Command {
	var instanceOnly, refresh bool
	var cfg []string
	var target string
	cmd := &cobra.Command{
		Use: "copy SOURCE [MEMBER:]NAME", Aliases: []string{"cp"}, Short: "Copy a container (copy-on-write where the pool can; MEMBER:NAME puts the copy on another member)", Args: cobra.ExactArgs(2),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			conf, err := parseKV("-c", cfg)
			if err != nil {
				return err
			}
			name := args[1]
			if member, n, ok := strings.Cut(name, ":"); ok {
				if target != "" && target != member {
					return fmt.Errorf("--target %s and %s: two different members", target, name)
				}
				target, name = member, n
			}
			resp, err := c.Containers.CopyContainer(cmd.Context(), &shoalv1.CopyContainerRequest{
				Source: args[0], Name: name, InstanceOnly: instanceOnly, Config: conf, Target: target, Refresh: refresh,
			})
			if err != nil {
				return convert(err)
			}
			op, err := follow(cmd, c, resp.GetOperation())
			if err != nil {
				return err
			}
			if r := op.GetResult(); r["bytes"] != "" {
				how := ""
				if r["base"] != "" {
					how = ", incremental on snapshot " + r["base"]
				}
				fmt.Printf("Copied %s to %s on %s (%s sent%s)\n", args[0], name, r["node"], humanBytes(atoi64(r["bytes"])), how)
			}
			return nil
		}),
	}
	cmd.Flags().BoolVar(&instanceOnly, "instance-only", false, "copy without snapshots")
	cmd.Flags().BoolVar(&refresh, "refresh", false, "update an existing copy on another member: send only what changed since the newest snapshot both have")
	cmd.Flags().StringVar(&target, "target", "", "cluster member to put the copy on (default: the source's)")
	cmd.Flags().StringArrayVarP(&cfg, "config", "c", nil, "config KEY=VALUE to override (repeatable)")
	return cmd
}

const moveLong = `Move a container to another cluster member (with two names and no
--target: rename it, as shoal rename OLD NEW).

Cold (the default): the container is stopped, its volume and snapshots are
sent, and it starts on the target if it ran.

Live (--live): the running container keeps its processes, memory and open
files. Its volume is sent while it runs; then it is frozen, checkpointed
with CRIU, and restored on the target with the rest of its volume. The
downtime is the time between the freeze and the thaw on the target. If
anything fails before the target runs it, the container is thawed where it
was: it never runs in two places. The container's address on the default
network may change (each member has its own bridge); connections from
inside it to outside survive only where the address is kept.

Known trade-off of post-copy (not used yet: this host moves memory
stop-and-copy): if the source died while the target still pulled memory
pages, the memory state would be gone and the container would be booted
fresh from its volume on the target, exactly once.`

// atoi64 parses an operation result number (0 when absent).
func atoi64(s string) int64 {
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}

func (a *app) moveCmd() *cobra.Command {
	var target string
	var live bool
	cmd := &cobra.Command{
		Use: "move NAME [--target MEMBER] [--live] | move OLD NEW", Aliases: []string{"mv"}, Short: "Move a container to another member (cold, or --live with CRIU), or with two names rename it", Long: moveLong, Args: cobra.RangeArgs(1, 2),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			if len(args) == 2 {
				if target != "" || live {
					return fmt.Errorf("move OLD NEW renames a container in place: --target and --live move one (not both at once)")
				}
				return renameContainer(cmd, c, args[0], args[1])
			}
			resp, err := c.Containers.MoveContainer(cmd.Context(), &shoalv1.MoveContainerRequest{Name: args[0], Target: target, Live: live})
			if err != nil {
				return convert(err)
			}
			op, err := follow(cmd, c, resp.GetOperation())
			if err != nil {
				return err
			}
			r := op.GetResult()
			if r["live"] == "true" {
				fmt.Printf("Moved %s live to %s in %s, downtime %s (%s: freeze+dump %sms, restore %sms; memory pages: %s before the freeze, %s during, %s after; %s sent)\n",
					args[0], r["node"], r["took"], r["downtime"], r["mode"], r["dump_ms"], r["restore_ms"],
					r["pages_before_freeze"], r["pages_during_freeze"], r["pages_after_freeze"], humanBytes(atoi64(r["bytes"])))
				if r["note"] != "" {
					fmt.Printf("Note: %s\n", r["note"])
				}
				return nil
			}
			fmt.Printf("Moved %s to %s in %s (%s bytes sent)\n", args[0], r["node"], r["took"], r["bytes"])
			return nil
		}),
	}
	cmd.Flags().StringVar(&target, "target", "", "member to move to (default: the scheduler picks)")
	cmd.Flags().BoolVar(&live, "live", false, "move the running container with its processes and memory (CRIU)")
	return cmd
}

func (a *app) consoleCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use: "console NAME --show-log", Short: "Show a container's console log", Args: cobra.ExactArgs(1),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			resp, err := c.Containers.GetConsoleLog(cmd.Context(), &shoalv1.GetConsoleLogRequest{Name: args[0]})
			if err != nil {
				return convert(err)
			}
			_, err = os.Stdout.Write(resp.GetLog())
			return err
		}),
	}
	cmd.Flags().Bool("show-log", true, "print the console log (the only mode for now)")
	return cmd
}

// haLine is info's HA line: "HA: replicas n2 (lag 3.1s, last 12:00:07,
// 48KiB sent), RPO 10s". A replica whose member is away (status in away)
// is kept for an increment when it returns: "n1 (offline, holds 12:00:07)".
func haLine(ct *shoalv1.Container, away map[string]string, now time.Time) string {
	p := ha.PolicyOf(cluster.ExpandedConfig(ct))
	var reps []string
	for _, r := range ct.GetReplicas() {
		if st, ok := away[r.GetMember()]; ok {
			reps = append(reps, fmt.Sprintf("%s (%s, holds %s)", r.GetMember(), st, time.Unix(0, r.GetTakenUnixNano()).Format("15:04:05")))
			continue
		}
		reps = append(reps, fmt.Sprintf("%s (lag %s, last %s, %s sent)", r.GetMember(), ha.Lag(r, now).Round(100*time.Millisecond),
			time.Unix(0, r.GetTakenUnixNano()).Format("15:04:05"), humanBytes(r.GetLastBytes())))
	}
	if len(reps) == 0 {
		reps = []string{"none yet"}
	}
	return fmt.Sprintf("HA: replicas %s, RPO %s (%d wanted)", strings.Join(reps, ", "), p.RPO, p.Replicas)
}
