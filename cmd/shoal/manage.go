package main

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/shoal-dev/shoal/api/client"
	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/internal/config"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// convert turns a gRPC error into the daemon's one-line message.
func convert(err error) error { return client.Convert(err) }

func (a *app) snapshotCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "snapshot", Short: "Manage container snapshots"}
	simple := func(use, short string, do func(c *client.Client, cmd *cobra.Command, ct, snap string) error) *cobra.Command {
		return &cobra.Command{
			Use: use + " NAME SNAPSHOT", Short: short, Args: cobra.ExactArgs(2),
			RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
				return convert(do(c, cmd, args[0], args[1]))
			}),
		}
	}
	var format string
	list := &cobra.Command{
		Use: "list NAME", Aliases: []string{"ls"}, Short: "List a container's snapshots", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkFormat(format); err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			resp, err := c.Containers.ListSnapshots(cmd.Context(), &shoalv1.ListSnapshotsRequest{Container: args[0]})
			if err != nil {
				return convert(err)
			}
			if format != "table" {
				return printData(os.Stdout, format, resp)
			}
			var rows [][]string
			for _, sn := range resp.GetSnapshots() {
				stateful := "no"
				if sn.GetStateful() {
					stateful = "yes"
				}
				rows = append(rows, []string{sn.GetName(), since(sn.GetCreatedAtUnixNano()), expiresColumn(sn.GetExpiresAtUnixNano()), stateful})
			}
			table(os.Stdout, []string{"NAME", "CREATED", "EXPIRES", "STATEFUL"}, rows)
			return nil
		},
	}
	list.Flags().StringVarP(&format, "format", "f", "table", "output format: "+formats)
	var stateless bool
	create := a.snapshotCreateCmd()
	restore := simple("restore", "Restore a container to a snapshot (a stateful one resumes its processes; otherwise a running container restarts)", func(c *client.Client, cmd *cobra.Command, ct, snap string) error {
		_, err := c.Containers.RestoreSnapshot(cmd.Context(), &shoalv1.RestoreSnapshotRequest{Container: ct, Name: snap, Stateless: stateless})
		return err
	})
	restore.Flags().BoolVar(&stateless, "stateless", false, "of a stateful snapshot, restore only the files and boot fresh")
	cmd.AddCommand(
		create,
		restore,
		simple("delete", "Delete a snapshot", func(c *client.Client, cmd *cobra.Command, ct, snap string) error {
			_, err := c.Containers.DeleteSnapshot(cmd.Context(), &shoalv1.DeleteSnapshotRequest{Container: ct, Name: snap})
			return err
		}),
		list,
		a.snapshotRenameCmd(),
		a.snapshotShowCmd(),
	)
	return cmd
}

func (a *app) configCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Manage container config (keys: " + strings.Join(config.Keys(), ", ") + ", user.*, environment.*)"}
	set := &cobra.Command{
		Use: "set NAME KEY=VALUE...", Short: "Set config keys (limits apply live)", Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			kv, err := parseKV("config", args[1:])
			if err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			_, err = c.Containers.UpdateContainer(cmd.Context(), &shoalv1.UpdateContainerRequest{Name: args[0], Set: kv})
			return convert(err)
		},
	}
	unset := &cobra.Command{
		Use: "unset NAME KEY...", Short: "Unset config keys", Args: cobra.MinimumNArgs(2),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			_, err := c.Containers.UpdateContainer(cmd.Context(), &shoalv1.UpdateContainerRequest{Name: args[0], Unset: args[1:]})
			return convert(err)
		}),
	}
	var expanded bool
	show := &cobra.Command{
		Use: "show NAME", Short: "Show a container's config (YAML: profiles, config, devices)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ct, err := a.getContainer(cmd, args[0])
			if err != nil {
				return err
			}
			return printYAML(containerDoc(ct, expanded))
		},
	}
	show.Flags().BoolVar(&expanded, "expanded", false, "show the effective config and devices: the profiles' in order, then the container's")
	var expandedGet bool
	get := &cobra.Command{
		Use: "get NAME KEY", Short: "Print one config key", Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ct, err := a.getContainer(cmd, args[0])
			if err != nil {
				return err
			}
			cfg := ct.GetConfig()
			if expandedGet {
				cfg = cluster.ExpandedConfig(ct)
			}
			fmt.Println(cfg[args[1]])
			return nil
		},
	}
	get.Flags().BoolVar(&expandedGet, "expanded", false, "the effective value (profiles included)")
	edit := &cobra.Command{
		Use: "edit NAME", Short: "Edit a container's profiles, config and devices as YAML in $EDITOR (or read them from stdin)", Args: cobra.ExactArgs(1),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			ct, err := a.getContainer(cmd, args[0])
			if err != nil {
				return err
			}
			cur := containerDoc(ct, false)
			text, err := yaml.Marshal(cur)
			if err != nil {
				return err
			}
			next, err := editText(text)
			if err != nil {
				return err
			}
			req, err := editRequest(ct, cur, next)
			if err != nil {
				return err
			}
			_, err = c.Containers.UpdateContainer(cmd.Context(), req)
			return convert(err)
		}),
	}
	cmd.AddCommand(set, unset, show, get, edit, a.deviceCmd())
	return cmd
}

// containerDocT is a container's config as `config show` prints it.
type containerDocT struct {
	Profiles []string                     `yaml:"profiles"`
	Config   map[string]string            `yaml:"config"`
	Devices  map[string]map[string]string `yaml:"devices"`
}

// containerDoc lays a container's config out as LXD does, its NICs among
// its devices; expanded shows the effective config and devices.
func containerDoc(ct *shoalv1.Container, expanded bool) containerDocT {
	cfg, devs := ct.GetConfig(), ct.GetDevices()
	if expanded {
		cfg, devs = cluster.ExpandedConfig(ct), cluster.ExpandedDevices(ct)
	}
	doc := containerDocT{Profiles: ct.GetProfiles(), Config: map[string]string{}, Devices: devicesDoc(devs)}
	if doc.Profiles == nil {
		doc.Profiles = []string{}
	}
	for k, v := range cfg {
		doc.Config[k] = v
	}
	doc.Config["volatile.eth0.hwaddr"] = ct.GetHwaddr()
	for _, n := range ct.GetNics() {
		m := map[string]string{"type": "nic"}
		for _, kv := range strings.Fields(nicKV(n)) {
			k, v, _ := strings.Cut(kv, "=")
			m[k] = v
		}
		doc.Devices[n.GetName()] = m
	}
	return doc
}

// deviceCmd manages a container's NICs as LXD's nic devices.
func (a *app) deviceCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "device", Short: "Manage a container's devices (nic, disk, unix-char, unix-block)"}
	add := &cobra.Command{
		Use: "add NAME DEVICE TYPE KEY=VALUE...",
		Long: "Add a device; a running container gets it at once.\n" +
			"  nic: {network=NET | nictype=macvlan parent=IFACE} [ipv4.address=IP] [hwaddr=MAC] [mtu=N] [name=IFNAME]\n" +
			"  disk: source=HOSTPATH path=PATH [readonly=true] [required=false]\n" +
			"  disk (a custom volume): pool=POOL source=VOLUME path=PATH [readonly=true]\n" +
			"  unix-char, unix-block: source=/dev/NODE [path=PATH] [uid=N] [gid=N] [mode=0660]",
		Short: "Add a device; a running container gets it at once", Args: cobra.MinimumNArgs(3),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			kv, err := parseKV("device", args[3:])
			if err != nil {
				return err
			}
			if args[2] != "nic" {
				d, err := deviceFromKV(args[1], args[2], kv)
				if err != nil {
					return err
				}
				ct, err := a.getContainer(cmd, args[0])
				if err != nil {
					return err
				}
				if _, ok := ct.GetDevices()[args[1]]; ok {
					return fmt.Errorf("device: container %s already has a device %s (change it with 'config device set')", args[0], args[1])
				}
				if _, err := c.Containers.UpdateContainer(cmd.Context(), &shoalv1.UpdateContainerRequest{Name: args[0], SetDevices: map[string]*shoalv1.Device{args[1]: d}}); err != nil {
					return convert(err)
				}
				fmt.Printf("Device %s added to %s\n", args[1], args[0])
				return nil
			}
			resp, err := c.Containers.AddNIC(cmd.Context(), &shoalv1.AddNICRequest{Container: args[0], Name: args[1], Config: kv})
			if err != nil {
				return convert(err)
			}
			n := resp.GetNic()
			fmt.Printf("Device %s added to %s (%s)\n", n.GetName(), args[0], nicKV(n))
			return nil
		}),
	}
	remove := &cobra.Command{
		Use: "remove NAME DEVICE", Aliases: []string{"rm"}, Short: "Remove a device (a nic other than eth0, or any other)", Args: cobra.ExactArgs(2),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			ct, err := a.getContainer(cmd, args[0])
			if err != nil {
				return err
			}
			if _, ok := cluster.ExpandedDevices(ct)[args[1]]; ok {
				if _, err := c.Containers.UpdateContainer(cmd.Context(), &shoalv1.UpdateContainerRequest{Name: args[0], RemoveDevices: []string{args[1]}}); err != nil {
					return convert(err)
				}
				fmt.Printf("Device %s removed from %s\n", args[1], args[0])
				return nil
			}
			if _, err := c.Containers.RemoveNIC(cmd.Context(), &shoalv1.RemoveNICRequest{Container: args[0], Name: args[1]}); err != nil {
				return convert(err)
			}
			fmt.Printf("Device %s removed from %s\n", args[1], args[0])
			return nil
		}),
	}
	list := &cobra.Command{
		Use: "list NAME", Aliases: []string{"ls"}, Short: "List a container's network interfaces", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ct, err := a.getContainer(cmd, args[0])
			if err != nil {
				return err
			}
			var rows [][]string
			for _, n := range ct.GetNics() {
				kind := "allocated"
				if n.GetIpv4Static() {
					kind = "static"
				}
				attach := n.GetNetwork()
				if n.GetNictype() != "" {
					attach, kind = n.GetNictype()+":"+n.GetParent(), "from the LAN"
				}
				mtu := "-"
				if n.GetMtu() > 0 {
					mtu = strconv.Itoa(int(n.GetMtu()))
				}
				rows = append(rows, []string{n.GetName(), "nic", cmp.Or(n.GetIfname(), n.GetName()), attach, n.GetIpv4(), kind, mtu, n.GetHwaddr()})
			}
			table(os.Stdout, []string{"DEVICE", "TYPE", "NAME", "NETWORK", "IPV4", "ADDRESS", "MTU", "HWADDR"}, rows)
			devs := cluster.ExpandedDevices(ct)
			if len(devs) > 0 {
				fmt.Println()
				rows = nil
				for _, name := range slices.Sorted(maps.Keys(devs)) {
					d := devs[name]
					from := "container"
					if _, own := ct.GetDevices()[name]; !own {
						from = "profile"
					}
					var kv []string
					for _, k := range sortedMapKeys(d.GetConfig()) {
						kv = append(kv, k+"="+d.GetConfig()[k])
					}
					rows = append(rows, []string{name, d.GetType(), strings.Join(kv, " "), from})
				}
				table(os.Stdout, []string{"DEVICE", "TYPE", "KEYS", "FROM"}, rows)
			}
			return nil
		},
	}
	show := &cobra.Command{
		Use: "show NAME", Short: "Show a container's own devices (YAML)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ct, err := a.getContainer(cmd, args[0])
			if err != nil {
				return err
			}
			return printYAML(containerDoc(ct, false).Devices)
		},
	}
	set := &cobra.Command{
		Use: "set NAME DEVICE KEY=VALUE...", Short: "Change a device's keys (a profile's device becomes the container's own)", Args: cobra.MinimumNArgs(3),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			kv, err := parseKV("device", args[2:])
			if err != nil {
				return err
			}
			ct, err := a.getContainer(cmd, args[0])
			if err != nil {
				return err
			}
			d, ok := cluster.ExpandedDevices(ct)[args[1]]
			if !ok {
				return fmt.Errorf("device: container %s has no device %s (nic keys cannot change: remove and add it)", args[0], args[1])
			}
			_, err = c.Containers.UpdateContainer(cmd.Context(), &shoalv1.UpdateContainerRequest{Name: args[0],
				SetDevices: map[string]*shoalv1.Device{args[1]: mergeDevice(d, kv)}})
			return convert(err)
		}),
	}
	cmd.AddCommand(add, remove, list, show, set)
	return cmd
}

// nicKV shows a NIC as the keys it was given (LXD's device keys).
func nicKV(n *shoalv1.NIC) string {
	var kv []string
	add := func(k, v string) {
		if v != "" && v != "0" {
			kv = append(kv, k+"="+v)
		}
	}
	add("network", n.GetNetwork())
	add("nictype", n.GetNictype())
	add("parent", n.GetParent())
	add("name", n.GetIfname())
	add("ipv4.address", n.GetIpv4())
	add("hwaddr", n.GetHwaddr())
	add("mtu", strconv.Itoa(int(n.GetMtu())))
	return strings.Join(kv, " ")
}

func (a *app) getContainer(cmd *cobra.Command, name string) (*shoalv1.Container, error) {
	c, err := a.client()
	if err != nil {
		return nil, err
	}
	resp, err := c.Containers.GetContainer(cmd.Context(), &shoalv1.GetContainerRequest{Name: name})
	if err != nil {
		return nil, convert(err)
	}
	return resp.GetContainer().GetContainer(), nil
}

func (a *app) storageCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "storage", Short: "Manage storage pools and custom volumes"}
	list := &cobra.Command{
		Use: "list", Aliases: []string{"ls"}, Short: "List storage pools", Args: cobra.NoArgs,
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			resp, err := c.Storage.ListStoragePools(cmd.Context(), &shoalv1.ListStoragePoolsRequest{})
			if err != nil {
				return convert(err)
			}
			var rows [][]string
			for _, p := range resp.GetPools() {
				used := ""
				if g, err := c.Storage.GetStoragePool(cmd.Context(), &shoalv1.GetStoragePoolRequest{Name: p.GetName()}); err == nil {
					used = humanBytes(g.GetUsedBytes())
				}
				size := ""
				if p.GetSizeBytes() > 0 {
					size = humanBytes(p.GetSizeBytes())
				}
				rows = append(rows, []string{p.GetName(), p.GetDriver(), p.GetSource(), size, used})
			}
			table(os.Stdout, []string{"NAME", "DRIVER", "SOURCE", "SIZE", "USED"}, rows)
			return nil
		}),
	}
	create := &cobra.Command{
		Use: "create NAME DRIVER [source=SOURCE] [size=SIZE] [btrfs.quotas=true]", Short: "Create a storage pool (drivers: btrfs, dir, lvm, zfs; btrfs.quotas=true enforces volume sizes)",
		Long: "Create a storage pool on this member.\n\n" +
			"source is, by driver: btrfs a mounted btrfs path; dir a directory; lvm a block device or an existing volume group;\n" +
			"zfs a block device, an existing zpool or a dataset in one. Without a source, btrfs, lvm and zfs make a loop pool:\n" +
			"a sparse file of size (default: a fifth of the free space, 5-30GiB) in each member's state directory.",
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			kv, err := parseKV("option", args[2:])
			if err != nil {
				return err
			}
			req := &shoalv1.CreateStoragePoolRequest{Name: args[0], Driver: args[1]}
			for k, v := range kv {
				switch k {
				case "source":
					req.Source = v
				case "size":
					if req.SizeBytes, err = config.ParseSize(v); err != nil {
						return fmt.Errorf("size: %q: %v", v, err)
					}
				case "btrfs.quotas":
					req.Config = map[string]string{k: v}
				default:
					return fmt.Errorf("option %q: unknown (allowed: source, size, btrfs.quotas)", k)
				}
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			_, err = c.Storage.CreateStoragePool(cmd.Context(), req)
			return convert(err)
		},
	}
	info := &cobra.Command{
		Use: "info NAME", Short: "Show a storage pool", Args: cobra.ExactArgs(1),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			resp, err := c.Storage.GetStoragePool(cmd.Context(), &shoalv1.GetStoragePoolRequest{Name: args[0]})
			if err != nil {
				return convert(err)
			}
			return printData(os.Stdout, "yaml", resp)
		}),
	}
	cmd.AddCommand(list, create, info, a.volumeCmd())
	return cmd
}

func (a *app) networkCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "network", Short: "Manage networks"}
	list := &cobra.Command{
		Use: "list", Aliases: []string{"ls"}, Short: "List managed networks", Args: cobra.NoArgs,
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			resp, err := c.Networks.ListNetworks(cmd.Context(), &shoalv1.ListNetworksRequest{})
			if err != nil {
				return convert(err)
			}
			var rows [][]string
			for _, n := range resp.GetNetworks() {
				vni := ""
				if n.GetType() == "overlay" {
					vni = fmt.Sprint(n.GetVni())
				}
				rows = append(rows, []string{n.GetName(), n.GetType(), n.GetIpv4Cidr(), fmt.Sprint(n.GetNat()), vni})
			}
			table(os.Stdout, []string{"NAME", "TYPE", "IPV4", "NAT", "VXLAN"}, rows)
			return nil
		}),
	}
	var format string
	info := &cobra.Command{
		Use: "info NAME", Short: "Show a network: subnet, gateway, members and every container's address", Args: cobra.ExactArgs(1),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			if err := checkFormat(format); err != nil {
				return err
			}
			resp, err := c.Networks.GetNetwork(cmd.Context(), &shoalv1.GetNetworkRequest{Name: args[0]})
			if err != nil {
				return convert(err)
			}
			if format != "table" {
				return printData(os.Stdout, format, resp)
			}
			n := resp.GetNetwork()
			fmt.Printf("name: %s\ntype: %s\nipv4: %s\nnat: %v\n", n.GetName(), n.GetType(), n.GetIpv4Cidr(), n.GetNat())
			if n.GetType() == "overlay" {
				fmt.Printf("vxlan.id: %d\n", n.GetVni())
			}
			for _, k := range sortedMapKeys(n.GetConfig()) {
				fmt.Printf("%s: %s\n", k, n.GetConfig()[k])
			}
			fmt.Printf("members: %s\n\n", strings.Join(resp.GetMembers(), ", "))
			var rows [][]string
			for _, a := range resp.GetAddresses() {
				rows = append(rows, []string{a.GetContainer(), a.GetNic(), a.GetIpv4(), a.GetHwaddr(), a.GetMember()})
			}
			table(os.Stdout, []string{"NAME", "NIC", "ADDRESS", "MAC", "MEMBER"}, rows)
			return nil
		}),
	}
	info.Flags().StringVarP(&format, "format", "f", "table", "output format: "+formats)
	var typ string
	create := &cobra.Command{
		Use: "create NAME [KEY=VALUE...]", Short: "Create a network on every member (--type bridge, overlay or macvlan)", Args: cobra.MinimumNArgs(1),
		Long: "Create a managed network. Keys: ipv4.address (GATEWAY/PREFIX or auto), ipv4.nat,\n" +
			"for an overlay vxlan.id, vxlan.port, bridge.mtu; for a macvlan parent (the host interface)\n" +
			"and parent.MEMBER (another interface on that member).",
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			cfg, err := parseKV("config", args[1:])
			if err != nil {
				return err
			}
			resp, err := c.Networks.CreateNetwork(cmd.Context(), &shoalv1.CreateNetworkRequest{Name: args[0], Type: typ, Config: cfg})
			if err != nil {
				return convert(err)
			}
			n := resp.GetNetwork()
			fmt.Printf("Network %s created (%s, %s)\n", n.GetName(), n.GetType(), n.GetIpv4Cidr())
			return nil
		}),
	}
	create.Flags().StringVar(&typ, "type", "bridge", "network type: bridge (one per member), overlay (one segment across the cluster) or macvlan (directly on a host interface's LAN)")
	del := &cobra.Command{
		Use: "delete NAME", Aliases: []string{"rm"}, Short: "Delete a network no container uses", Args: cobra.ExactArgs(1),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			if _, err := c.Networks.DeleteNetwork(cmd.Context(), &shoalv1.DeleteNetworkRequest{Name: args[0]}); err != nil {
				return convert(err)
			}
			fmt.Printf("Network %s deleted\n", args[0])
			return nil
		}),
	}
	cmd.AddCommand(list, info, create, del)
	return cmd
}

func (a *app) operationCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "operation", Short: "Show, wait on and cancel operations"}
	list := &cobra.Command{
		Use: "list", Aliases: []string{"ls"}, Short: "List recent operations", Args: cobra.NoArgs,
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			resp, err := c.Operations.ListOperations(cmd.Context(), &shoalv1.ListOperationsRequest{})
			if err != nil {
				return convert(err)
			}
			var rows [][]string
			for _, op := range resp.GetOperations() {
				st := strings.TrimPrefix(op.GetStatus().String(), "OPERATION_STATUS_")
				rows = append(rows, []string{op.GetId(), op.GetKind(), op.GetResource(), st, op.GetError()})
			}
			table(os.Stdout, []string{"ID", "KIND", "RESOURCE", "STATUS", "ERROR"}, rows)
			return nil
		}),
	}
	one := func(use, short string, do func(c *client.Client, cmd *cobra.Command, id string) (*shoalv1.Operation, error)) *cobra.Command {
		return &cobra.Command{
			Use: use + " ID", Short: short, Args: cobra.ExactArgs(1),
			RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
				op, err := do(c, cmd, args[0])
				if err != nil {
					return convert(err)
				}
				return printData(os.Stdout, "yaml", op)
			}),
		}
	}
	cmd.AddCommand(list,
		one("show", "Show an operation", func(c *client.Client, cmd *cobra.Command, id string) (*shoalv1.Operation, error) {
			r, err := c.Operations.GetOperation(cmd.Context(), &shoalv1.GetOperationRequest{Id: id})
			return r.GetOperation(), err
		}),
		one("wait", "Wait for an operation to end", func(c *client.Client, cmd *cobra.Command, id string) (*shoalv1.Operation, error) {
			r, err := c.Operations.WaitOperation(cmd.Context(), &shoalv1.WaitOperationRequest{Id: id})
			return r.GetOperation(), err
		}),
		one("cancel", "Cancel a running operation", func(c *client.Client, cmd *cobra.Command, id string) (*shoalv1.Operation, error) {
			r, err := c.Operations.CancelOperation(cmd.Context(), &shoalv1.CancelOperationRequest{Id: id})
			return r.GetOperation(), err
		}),
	)
	return cmd
}

func (a *app) monitorCmd() *cobra.Command {
	var types []string
	var format string
	cmd := &cobra.Command{
		Use: "monitor", Short: "Print events as they happen on every member (TIME MEMBER TYPE ACTION RESOURCE [DETAIL])", Args: cobra.NoArgs,
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			stream, err := c.Events.StreamEvents(cmd.Context(), &shoalv1.StreamEventsRequest{Types: types})
			if err != nil {
				return convert(err)
			}
			if _, err := stream.Header(); err != nil {
				return convert(err)
			}
			fmt.Fprintln(os.Stderr, "Listening for events (Ctrl-C to stop)")
			for {
				resp, err := stream.Recv()
				if errors.Is(err, io.EOF) || cmd.Context().Err() != nil {
					return nil
				}
				if err != nil {
					return convert(err)
				}
				e := resp.GetEvent()
				if format == "json" {
					if err := printData(os.Stdout, "json", e); err != nil {
						return err
					}
					continue
				}
				line := fmt.Sprintf("%s %s %s %s %s", since(e.GetTimeUnixNano()), cmp.Or(e.GetNode(), "-"), e.GetType(), e.GetAction(), e.GetResource())
				if d := e.GetDetail(); d != "" {
					line += " " + d
				}
				if op := e.GetOperation(); op != nil {
					line += fmt.Sprintf(" operation=%s kind=%s", op.GetId(), op.GetKind())
					if p := op.GetProgress().GetPhase(); p != "" {
						line += " phase=" + strings.ReplaceAll(p, " ", "_")
					}
				}
				fmt.Println(line)
			}
		}),
	}
	cmd.Flags().StringArrayVar(&types, "type", nil, "event types to show: lifecycle, operation, logging (repeatable; default all)")
	cmd.Flags().StringVarP(&format, "format", "f", "text", "text or json")
	return cmd
}

// editRequest turns an edited container document into the update that
// makes it so: keys set and unset, the profile list, devices set and
// removed. NICs (and volatile keys) cannot change through it.
func editRequest(ct *shoalv1.Container, cur containerDocT, text []byte) (*shoalv1.UpdateContainerRequest, error) {
	var doc containerDocT
	dec := yaml.NewDecoder(strings.NewReader(string(text)))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil && err != io.EOF {
		return nil, fmt.Errorf("container YAML: %v", err)
	}
	req := &shoalv1.UpdateContainerRequest{Name: ct.GetName(), Set: map[string]string{}, SetDevices: map[string]*shoalv1.Device{}}
	for k, v := range doc.Config {
		if strings.HasPrefix(k, "volatile.") {
			if cur.Config[k] != v {
				return nil, fmt.Errorf("%s: volatile keys cannot be changed", k)
			}
			continue
		}
		if old, ok := ct.GetConfig()[k]; !ok || old != v {
			req.Set[k] = v
		}
	}
	for k := range ct.GetConfig() {
		if _, ok := doc.Config[k]; !ok {
			req.Unset = append(req.Unset, k)
		}
	}
	if !slices.Equal(doc.Profiles, cur.Profiles) {
		req.SetProfiles, req.Profiles = true, doc.Profiles
	}
	for name, m := range doc.Devices {
		if old, ok := cur.Devices[name]; ok && old["type"] == "nic" || m["type"] == "nic" {
			if !maps.Equal(old, m) {
				return nil, fmt.Errorf("devices.%s: a nic cannot be changed here (remove and add it with 'config device')", name)
			}
			continue
		}
		if old, ok := cur.Devices[name]; ok && maps.Equal(old, m) {
			continue
		}
		d, err := deviceFromKV(name, m["type"], m)
		if err != nil {
			return nil, err
		}
		req.SetDevices[name] = d
	}
	for name, old := range cur.Devices {
		if _, ok := doc.Devices[name]; !ok {
			if old["type"] == "nic" {
				return nil, fmt.Errorf("devices.%s: a nic cannot be removed here (use 'config device remove')", name)
			}
			req.RemoveDevices = append(req.RemoveDevices, name)
		}
	}
	return req, nil
}
