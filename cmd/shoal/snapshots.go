package main

import (
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/spf13/cobra"

	"github.com/shoal-dev/shoal/api/client"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// snapshotCreateCmd is shoal snapshot create NAME [SNAPSHOT]: without a
// snapshot name the container's snapshots.pattern names it (snap0, ...).
func (a *app) snapshotCreateCmd() *cobra.Command {
	var stateful, noExpiry bool
	var expiry string
	cmd := &cobra.Command{
		Use:   "create NAME [SNAPSHOT]",
		Short: "Snapshot a container (--stateful: with its running processes, by CRIU; no SNAPSHOT: named by snapshots.pattern)",
		Example: `  shoal snapshot create c1 before-upgrade
  shoal snapshot create c1 --expiry 1d      # deleted a day from now
  shoal snapshot create c1 keep --no-expiry # ignore snapshots.expiry`,
		Args: cobra.RangeArgs(1, 2),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			if noExpiry && expiry != "" {
				return fmt.Errorf("--expiry and --no-expiry: one or the other")
			}
			req := &shoalv1.CreateSnapshotRequest{Container: args[0], Stateful: stateful, Expiry: expiry, NoExpiry: noExpiry}
			if len(args) == 2 {
				req.Name = args[1]
			}
			resp, err := c.Containers.CreateSnapshot(cmd.Context(), req)
			if err != nil {
				return convert(err)
			}
			if len(args) == 1 {
				fmt.Printf("Snapshot %s created\n", resp.GetSnapshot().GetName())
			}
			return nil
		}),
	}
	cmd.Flags().BoolVar(&stateful, "stateful", false, "keep a CRIU checkpoint of the processes; restoring resumes them")
	cmd.Flags().StringVar(&expiry, "expiry", "", "when the snapshot is deleted, as snapshots.expiry: e.g. 30M, 1d, 2w 3d (units M H d w m y)")
	cmd.Flags().BoolVar(&noExpiry, "no-expiry", false, "ignore snapshots.expiry: keep the snapshot until deleted")
	return cmd
}

// snapshotRenameCmd is shoal snapshot rename NAME OLD NEW.
func (a *app) snapshotRenameCmd() *cobra.Command {
	return &cobra.Command{
		Use: "rename NAME SNAPSHOT NEW", Short: "Rename a snapshot", Args: cobra.ExactArgs(3),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			_, err := c.Containers.RenameSnapshot(cmd.Context(), &shoalv1.RenameSnapshotRequest{Container: args[0], Name: args[1], NewName: args[2]})
			return convert(err)
		}),
	}
}

// snapshotShowCmd is shoal snapshot show NAME SNAPSHOT.
func (a *app) snapshotShowCmd() *cobra.Command {
	return &cobra.Command{
		Use: "show NAME SNAPSHOT", Short: "Show a snapshot (YAML: name, created, expires, stateful, config)", Args: cobra.ExactArgs(2),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			resp, err := c.Containers.ListSnapshots(cmd.Context(), &shoalv1.ListSnapshotsRequest{Container: args[0]})
			if err != nil {
				return convert(err)
			}
			for _, sn := range resp.GetSnapshots() {
				if sn.GetName() == args[1] {
					fmt.Fprint(os.Stdout, snapshotYAML(sn))
					return nil
				}
			}
			return fmt.Errorf("snapshot %q of %q not found", args[1], args[0])
		}),
	}
}

// snapshotYAML renders a snapshot as shoal snapshot show prints it.
func snapshotYAML(sn *shoalv1.Snapshot) string {
	stamp := func(ns int64) string {
		if ns == 0 {
			return `""`
		}
		return time.Unix(0, ns).UTC().Format(time.RFC3339)
	}
	out := fmt.Sprintf("name: %s\ncreated: %s\nexpires: %s\nstateful: %t\n", sn.GetName(), stamp(sn.GetCreatedAtUnixNano()),
		stamp(sn.GetExpiresAtUnixNano()), sn.GetStateful())
	if len(sn.GetConfig()) == 0 {
		return out + "config: {}\n"
	}
	out += "config:\n"
	keys := make([]string, 0, len(sn.GetConfig()))
	for k := range sn.GetConfig() {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		out += fmt.Sprintf("  %s: %q\n", k, sn.GetConfig()[k])
	}
	return out
}

// expiresColumn is a snapshot's expiry as snapshot list shows it.
func expiresColumn(ns int64) string {
	if ns == 0 {
		return ""
	}
	return time.Unix(0, ns).Local().Format("2006/01/02 15:04 MST")
}
