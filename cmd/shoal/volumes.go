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
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// volumeCmd is "shoal storage volume": custom volumes, as LXD's
// "lxc storage volume" (POOL NAME arguments, POOL/NAME for copy and move).
func (a *app) volumeCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "volume", Short: "Manage custom storage volumes (attach them to containers as disk devices)"}
	cmd.AddCommand(a.volumeListCmd(), a.volumeCreateCmd(), a.volumeShowCmd(), a.volumeInfoCmd(),
		a.volumeDeleteCmd(), a.volumeGetCmd(), a.volumeSetCmd(), a.volumeUnsetCmd(),
		a.volumeAttachCmd(), a.volumeDetachCmd(), a.volumeSnapshotCmd(), a.volumeRestoreCmd(),
		a.volumeCopyCmd(), a.volumeMoveCmd(), a.volumeRenameCmd())
	return cmd
}

func (a *app) volumeListCmd() *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use: "list [POOL]", Aliases: []string{"ls"}, Short: "List custom volumes (of one pool, or all)", Args: cobra.MaximumNArgs(1),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			if err := checkFormat(format); err != nil {
				return err
			}
			req := &shoalv1.ListStorageVolumesRequest{}
			if len(args) == 1 {
				req.Pool = args[0]
			}
			resp, err := c.Storage.ListStorageVolumes(cmd.Context(), req)
			if err != nil {
				return convert(err)
			}
			if format != "table" {
				return printData(os.Stdout, format, resp)
			}
			var rows [][]string
			for _, v := range resp.GetVolumes() {
				rows = append(rows, []string{v.GetPool(), v.GetName(), v.GetNode(), v.GetConfig()["size"],
					strconv.Itoa(len(v.GetSnapshots())), strings.Join(v.GetUsedBy(), ","), v.GetDescription()})
			}
			table(os.Stdout, []string{"POOL", "NAME", "LOCATION", "SIZE", "SNAPSHOTS", "USED BY", "DESCRIPTION"}, rows)
			return nil
		}),
	}
	cmd.Flags().StringVarP(&format, "format", "f", "table", "output format: "+formats)
	return cmd
}

func (a *app) volumeCreateCmd() *cobra.Command {
	var target, desc string
	cmd := &cobra.Command{
		Use: "create POOL NAME [size=SIZE] [user.KEY=VALUE...]", Short: "Create a custom volume (on --target, default the member answering)", Args: cobra.MinimumNArgs(2),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			kv, err := parseKV("config", args[2:])
			if err != nil {
				return err
			}
			resp, err := c.Storage.CreateStorageVolume(cmd.Context(), &shoalv1.CreateStorageVolumeRequest{
				Pool: args[0], Name: args[1], Config: kv, Description: desc, Target: target})
			if err != nil {
				return convert(err)
			}
			fmt.Printf("Storage volume %s created on %s in pool %s\n", args[1], resp.GetVolume().GetNode(), args[0])
			return nil
		}),
	}
	cmd.Flags().StringVar(&target, "target", "", "cluster member to create it on")
	cmd.Flags().StringVar(&desc, "description", "", "a description")
	return cmd
}

// volumeView is a custom volume as "show" prints it (LXD's layout).
type volumeView struct {
	Name        string            `yaml:"name"`
	Pool        string            `yaml:"pool"`
	Location    string            `yaml:"location"`
	Description string            `yaml:"description"`
	Config      map[string]string `yaml:"config"`
	Snapshots   []string          `yaml:"snapshots"`
	UsedBy      []string          `yaml:"used_by"`
	CreatedAt   string            `yaml:"created_at"`
}

func viewOf(v *shoalv1.StorageVolume) volumeView {
	out := volumeView{Name: v.GetName(), Pool: v.GetPool(), Location: v.GetNode(), Description: v.GetDescription(),
		Config: v.GetConfig(), UsedBy: v.GetUsedBy(), Snapshots: []string{},
		CreatedAt: time.Unix(0, v.GetCreatedAtUnixNano()).UTC().Format(time.RFC3339)}
	if out.Config == nil {
		out.Config = map[string]string{}
	}
	if out.UsedBy == nil {
		out.UsedBy = []string{}
	}
	for _, sn := range v.GetSnapshots() {
		out.Snapshots = append(out.Snapshots, sn.GetName())
	}
	return out
}

func (a *app) volumeShowCmd() *cobra.Command {
	return &cobra.Command{
		Use: "show POOL NAME", Short: "Show a custom volume (YAML)", Args: cobra.ExactArgs(2),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			resp, err := c.Storage.GetStorageVolume(cmd.Context(), &shoalv1.GetStorageVolumeRequest{Pool: args[0], Name: args[1]})
			if err != nil {
				return convert(err)
			}
			return printYAML(viewOf(resp.GetVolume()))
		}),
	}
}

func (a *app) volumeInfoCmd() *cobra.Command {
	return &cobra.Command{
		Use: "info POOL NAME", Short: "Show a custom volume's usage and snapshots", Args: cobra.ExactArgs(2),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			resp, err := c.Storage.GetStorageVolume(cmd.Context(), &shoalv1.GetStorageVolumeRequest{Pool: args[0], Name: args[1]})
			if err != nil {
				return convert(err)
			}
			v := resp.GetVolume()
			fmt.Printf("Name: %s\nPool: %s\nLocation: %s\nUsage: %s\n", v.GetName(), v.GetPool(), v.GetNode(), humanBytes(resp.GetUsedBytes()))
			if s := v.GetConfig()["size"]; s != "" {
				fmt.Printf("Size: %s\n", s)
			}
			if len(v.GetUsedBy()) > 0 {
				fmt.Printf("Used by: %s\n", strings.Join(v.GetUsedBy(), ", "))
			}
			if len(v.GetSnapshots()) > 0 {
				fmt.Println("Snapshots:")
				var rows [][]string
				for _, sn := range v.GetSnapshots() {
					rows = append(rows, []string{sn.GetName(), time.Unix(0, sn.GetCreatedAtUnixNano()).UTC().Format(time.RFC3339)})
				}
				table(os.Stdout, []string{"NAME", "TAKEN AT"}, rows)
			}
			return nil
		}),
	}
}

func (a *app) volumeDeleteCmd() *cobra.Command {
	return &cobra.Command{
		Use: "delete POOL NAME[/SNAPSHOT]", Aliases: []string{"rm"}, Short: "Delete a custom volume no container uses (or one of its snapshots)", Args: cobra.ExactArgs(2),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			if name, snap, ok := strings.Cut(args[1], "/"); ok {
				_, err := c.Storage.DeleteStorageVolumeSnapshot(cmd.Context(), &shoalv1.DeleteStorageVolumeSnapshotRequest{Pool: args[0], Name: name, Snapshot: snap})
				return convert(err)
			}
			_, err := c.Storage.DeleteStorageVolume(cmd.Context(), &shoalv1.DeleteStorageVolumeRequest{Pool: args[0], Name: args[1]})
			return convert(err)
		}),
	}
}

func (a *app) volumeGetCmd() *cobra.Command {
	return &cobra.Command{
		Use: "get POOL NAME KEY", Short: "Print one key of a custom volume", Args: cobra.ExactArgs(3),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			resp, err := c.Storage.GetStorageVolume(cmd.Context(), &shoalv1.GetStorageVolumeRequest{Pool: args[0], Name: args[1]})
			if err != nil {
				return convert(err)
			}
			fmt.Println(resp.GetVolume().GetConfig()[args[2]])
			return nil
		}),
	}
}

func (a *app) volumeSetCmd() *cobra.Command {
	return &cobra.Command{
		Use: "set POOL NAME KEY=VALUE...", Short: "Set keys of a custom volume (size applies at once)", Args: cobra.MinimumNArgs(3),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			kv, err := parseKV("config", args[2:])
			if err != nil {
				return err
			}
			req := &shoalv1.UpdateStorageVolumeRequest{Pool: args[0], Name: args[1], Config: kv}
			if d, ok := kv["description"]; ok {
				delete(kv, "description")
				req.Description, req.SetDescription = d, true
			}
			_, err = c.Storage.UpdateStorageVolume(cmd.Context(), req)
			return convert(err)
		}),
	}
}

func (a *app) volumeUnsetCmd() *cobra.Command {
	return &cobra.Command{
		Use: "unset POOL NAME KEY...", Short: "Unset keys of a custom volume", Args: cobra.MinimumNArgs(3),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			_, err := c.Storage.UpdateStorageVolume(cmd.Context(), &shoalv1.UpdateStorageVolumeRequest{Pool: args[0], Name: args[1], Unset: args[2:]})
			return convert(err)
		}),
	}
}

func (a *app) volumeAttachCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "attach POOL VOLUME CONTAINER [DEVICE] PATH",
		Short: "Attach a custom volume to a container as a disk device at PATH (device name: the volume's); a running container gets it at once",
		Args:  cobra.RangeArgs(4, 5),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			pool, vol, ct := args[0], args[1], args[2]
			dev, path := vol, args[3]
			if len(args) == 5 {
				dev, path = args[3], args[4]
			}
			d := &shoalv1.Device{Type: "disk", Config: map[string]string{"pool": pool, "source": vol, "path": path}}
			cur, err := a.getContainer(cmd, ct)
			if err != nil {
				return err
			}
			if _, ok := cur.GetDevices()[dev]; ok {
				return fmt.Errorf("device: container %s already has a device %s (name another: attach POOL VOLUME CONTAINER DEVICE PATH)", ct, dev)
			}
			if _, err := c.Containers.UpdateContainer(cmd.Context(), &shoalv1.UpdateContainerRequest{Name: ct, SetDevices: map[string]*shoalv1.Device{dev: d}}); err != nil {
				return convert(err)
			}
			fmt.Printf("Storage volume %s attached to %s at %s (device %s)\n", vol, ct, path, dev)
			return nil
		}),
	}
}

func (a *app) volumeDetachCmd() *cobra.Command {
	return &cobra.Command{
		Use: "detach POOL VOLUME CONTAINER [DEVICE]", Short: "Detach a custom volume from a container", Args: cobra.RangeArgs(3, 4),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			pool, vol, ct := args[0], args[1], args[2]
			cur, err := a.getContainer(cmd, ct)
			if err != nil {
				return err
			}
			var devs []string
			for name, d := range cur.GetDevices() {
				if d.GetType() == "disk" && d.GetConfig()["pool"] == pool && d.GetConfig()["source"] == vol && (len(args) == 3 || name == args[3]) {
					devs = append(devs, name)
				}
			}
			if len(devs) == 0 {
				if len(cur.GetExpandedDevices()) > 0 {
					for name, d := range cur.GetExpandedDevices() {
						if d.GetConfig()["pool"] == pool && d.GetConfig()["source"] == vol {
							return fmt.Errorf("device %s of %s comes from a profile: change the profile (shoal profile device remove)", name, ct)
						}
					}
				}
				return fmt.Errorf("container %s does not attach storage volume %s/%s", ct, pool, vol)
			}
			slices.Sort(devs)
			if _, err := c.Containers.UpdateContainer(cmd.Context(), &shoalv1.UpdateContainerRequest{Name: ct, RemoveDevices: devs}); err != nil {
				return convert(err)
			}
			fmt.Printf("Storage volume %s detached from %s\n", vol, ct)
			return nil
		}),
	}
}

func (a *app) volumeSnapshotCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "snapshot", Short: "Manage a custom volume's snapshots"}
	create := &cobra.Command{
		Use: "create POOL VOLUME [SNAPSHOT]", Short: "Take a read-only snapshot (default name snapN)", Args: cobra.RangeArgs(2, 3),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			req := &shoalv1.CreateStorageVolumeSnapshotRequest{Pool: args[0], Name: args[1]}
			if len(args) == 3 {
				req.Snapshot = args[2]
			}
			resp, err := c.Storage.CreateStorageVolumeSnapshot(cmd.Context(), req)
			if err != nil {
				return convert(err)
			}
			fmt.Printf("Snapshot %s of %s taken\n", resp.GetSnapshot().GetName(), args[1])
			return nil
		}),
	}
	del := &cobra.Command{
		Use: "delete POOL VOLUME SNAPSHOT", Aliases: []string{"rm"}, Short: "Delete a snapshot", Args: cobra.ExactArgs(3),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			_, err := c.Storage.DeleteStorageVolumeSnapshot(cmd.Context(), &shoalv1.DeleteStorageVolumeSnapshotRequest{Pool: args[0], Name: args[1], Snapshot: args[2]})
			return convert(err)
		}),
	}
	list := &cobra.Command{
		Use: "list POOL VOLUME", Aliases: []string{"ls"}, Short: "List snapshots", Args: cobra.ExactArgs(2),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			resp, err := c.Storage.GetStorageVolume(cmd.Context(), &shoalv1.GetStorageVolumeRequest{Pool: args[0], Name: args[1]})
			if err != nil {
				return convert(err)
			}
			var rows [][]string
			for _, sn := range resp.GetVolume().GetSnapshots() {
				rows = append(rows, []string{sn.GetName(), time.Unix(0, sn.GetCreatedAtUnixNano()).UTC().Format(time.RFC3339)})
			}
			table(os.Stdout, []string{"NAME", "TAKEN AT"}, rows)
			return nil
		}),
	}
	restore := a.volumeRestoreCmd()
	cmd.AddCommand(create, del, list, restore)
	return cmd
}

func (a *app) volumeRestoreCmd() *cobra.Command {
	return &cobra.Command{
		Use: "restore POOL VOLUME SNAPSHOT", Short: "Give a custom volume its snapshot's content (no running container may use it)", Args: cobra.ExactArgs(3),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			_, err := c.Storage.RestoreStorageVolumeSnapshot(cmd.Context(), &shoalv1.RestoreStorageVolumeSnapshotRequest{Pool: args[0], Name: args[1], Snapshot: args[2]})
			return convert(err)
		}),
	}
}

// poolVolume splits POOL/VOLUME.
func poolVolume(arg, field string) (string, string, error) {
	pool, vol, ok := strings.Cut(arg, "/")
	if !ok || pool == "" || vol == "" || strings.Contains(vol, "/") {
		return "", "", fmt.Errorf("%s: %q is not POOL/VOLUME", field, arg)
	}
	return pool, vol, nil
}

// volumePair reads SOURCE and DESTINATION (POOL/VOLUME each, one pool).
func volumePair(args []string) (pool, src, dst string, err error) {
	pool, src, err = poolVolume(args[0], "source")
	if err != nil {
		return "", "", "", err
	}
	dpool, dst, err := poolVolume(args[1], "destination")
	if err != nil {
		return "", "", "", err
	}
	if dpool != pool {
		return "", "", "", fmt.Errorf("destination: pool %s differs from the source's (%s): volumes are copied and moved within their pool", dpool, pool)
	}
	return pool, src, dst, nil
}

func (a *app) volumeCopyCmd() *cobra.Command {
	var target string
	var volumeOnly bool
	cmd := &cobra.Command{
		Use: "copy POOL/VOLUME POOL/NEW [--target MEMBER]", Aliases: []string{"cp"}, Short: "Copy a custom volume with its snapshots (to another member with --target)", Args: cobra.ExactArgs(2),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			pool, src, dst, err := volumePair(args)
			if err != nil {
				return err
			}
			resp, err := c.Storage.CopyStorageVolume(cmd.Context(), &shoalv1.CopyStorageVolumeRequest{Pool: pool, Name: src, NewName: dst, Target: target, VolumeOnly: volumeOnly})
			if err != nil {
				return convert(err)
			}
			op, err := follow(cmd, c, resp.GetOperation())
			if err != nil {
				return err
			}
			if r := op.GetResult(); r["bytes"] != "" {
				fmt.Printf("Copied storage volume %s to %s on %s (%s sent)\n", src, dst, r["node"], humanBytes(atoi64(r["bytes"])))
			}
			return nil
		}),
	}
	cmd.Flags().StringVar(&target, "target", "", "cluster member to put the copy on (default: the source's)")
	cmd.Flags().BoolVar(&volumeOnly, "volume-only", false, "copy without snapshots")
	return cmd
}

func (a *app) volumeMoveCmd() *cobra.Command {
	var target string
	cmd := &cobra.Command{
		Use:   "move POOL/VOLUME [POOL/NEW] [--target MEMBER]",
		Short: "Rename a custom volume, or move it to another member (--target); a volume attached to a container moves with the container",
		Args:  cobra.RangeArgs(1, 2),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			pool, src, err := poolVolume(args[0], "source")
			if err != nil {
				return err
			}
			dst := ""
			if len(args) == 2 {
				if _, _, dst, err = volumePair(args); err != nil {
					return err
				}
			}
			return a.moveVolume(cmd, c, pool, src, dst, target)
		}),
	}
	cmd.Flags().StringVar(&target, "target", "", "cluster member to move it to")
	return cmd
}

func (a *app) volumeRenameCmd() *cobra.Command {
	return &cobra.Command{
		Use: "rename POOL VOLUME NEW", Short: "Rename a custom volume no container uses", Args: cobra.ExactArgs(3),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			return a.moveVolume(cmd, c, args[0], args[1], args[2], "")
		}),
	}
}

func (a *app) moveVolume(cmd *cobra.Command, c *client.Client, pool, name, newName, target string) error {
	resp, err := c.Storage.MoveStorageVolume(cmd.Context(), &shoalv1.MoveStorageVolumeRequest{Pool: pool, Name: name, NewName: newName, Target: target})
	if err != nil {
		return convert(err)
	}
	op, err := follow(cmd, c, resp.GetOperation())
	if err != nil {
		return err
	}
	if r := op.GetResult(); r["node"] != "" {
		fmt.Printf("Moved storage volume %s to %s (%s sent)\n", name, r["node"], humanBytes(atoi64(r["bytes"])))
	} else {
		fmt.Printf("Renamed storage volume %s to %s\n", name, newName)
	}
	return nil
}
