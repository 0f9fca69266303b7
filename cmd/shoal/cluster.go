package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/shoal-dev/shoal/api/client"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

func (a *app) clusterCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "cluster", Short: "Manage cluster members"}
	var role string
	var ttl, validity time.Duration
	var prefixes []string
	var readOnly bool
	add := &cobra.Command{
		Use: "add NAME", Short: "Issue a one-time join token for a new node (or, with --role client, a remote client)", Args: cobra.ExactArgs(1),
		Example: `  shoal cluster add node2                                   # a member
  shoal cluster add laptop --role client                    # a client with full access
  shoal cluster add ci --role client --restrict-to web- --read-only   # sees only web-* containers, changes nothing`,
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			if ttl < 0 {
				return fmt.Errorf("--ttl: must not be negative")
			}
			if validity < 0 {
				return fmt.Errorf("--cert-validity: must not be negative")
			}
			req := &shoalv1.CreateJoinTokenRequest{Name: args[0], Role: role, TtlSeconds: int32(ttl.Seconds()), CertValiditySeconds: int64(validity.Seconds())}
			if len(prefixes) > 0 || readOnly {
				if role != "client" {
					return fmt.Errorf("--restrict-to and --read-only: only for --role client")
				}
				req.Grant = &shoalv1.Grant{ContainerPrefixes: prefixes, ReadOnly: readOnly}
			}
			resp, err := c.Cluster.CreateJoinToken(cmd.Context(), req)
			if err != nil {
				return convert(err)
			}
			fmt.Fprintf(os.Stderr, "Join token for %s (one use, expires %s):\n", args[0], time.Unix(resp.GetExpiresUnix(), 0).UTC().Format(time.RFC3339))
			fmt.Println(resp.GetToken())
			return nil
		}),
	}
	add.Flags().StringVar(&role, "role", "node", "node or client")
	add.Flags().DurationVar(&ttl, "ttl", time.Hour, "how long the token stays valid")
	add.Flags().DurationVar(&validity, "cert-validity", 0, "lifetime of the certificate the token buys (default a year)")
	add.Flags().StringSliceVar(&prefixes, "restrict-to", nil, "restricted client: only containers whose names start with this (repeatable)")
	add.Flags().BoolVar(&readOnly, "read-only", false, "restricted client: read-only calls only")
	var format string
	list := &cobra.Command{
		Use: "list", Aliases: []string{"ls"}, Short: "List members", Args: cobra.NoArgs,
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			if err := checkFormat(format); err != nil {
				return err
			}
			resp, err := c.Cluster.ListMembers(cmd.Context(), &shoalv1.ListMembersRequest{})
			if err != nil {
				return convert(err)
			}
			if format != "table" {
				return printData(os.Stdout, format, resp)
			}
			var rows [][]string
			for _, m := range resp.GetMembers() {
				rows = append(rows, []string{m.GetName(), m.GetAddress(), m.GetRole(), strings.ToUpper(m.GetStatus()),
					fmt.Sprint(m.GetCpuMillis() / 1000), humanBytes(m.GetMemoryBytes()), fmt.Sprint(m.GetContainers())})
			}
			table(os.Stdout, []string{"NAME", "ADDRESS", "ROLE", "STATUS", "CPU", "MEM", "CONTAINERS"}, rows)
			return nil
		}),
	}
	list.Flags().StringVarP(&format, "format", "f", "table", "output format: "+formats)
	var force bool
	remove := &cobra.Command{
		Use: "remove NAME", Aliases: []string{"rm"}, Short: "Remove a member", Args: cobra.ExactArgs(1),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			_, err := c.Cluster.RemoveMember(cmd.Context(), &shoalv1.RemoveMemberRequest{Name: args[0], Force: force})
			return convert(err)
		}),
	}
	remove.Flags().BoolVarP(&force, "force", "f", false, "remove even if it owns containers or is unreachable")
	var live bool
	evacuate := &cobra.Command{
		Use: "evacuate NAME [--live]", Short: "Move a member's containers elsewhere (cold, or --live where CRIU can) and keep new ones off it (for maintenance)", Args: cobra.ExactArgs(1),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			resp, err := c.Cluster.EvacuateMember(cmd.Context(), &shoalv1.EvacuateMemberRequest{Name: args[0], Live: live})
			if err != nil {
				return convert(err)
			}
			fmt.Printf("Member %s evacuated; moved: %s; stopped: %s\n", args[0], strings.Join(resp.GetMoved(), ", "), strings.Join(resp.GetStopped(), ", "))
			return nil
		}),
	}
	evacuate.Flags().BoolVar(&live, "live", false, "move running containers live (CRIU) where they can; the rest move cold")
	var fenced bool
	heal := &cobra.Command{
		Use: "heal NAME [--i-know-it-is-fenced]", Short: "Restart a dead member's HA containers on the members holding their replicas, now", Args: cobra.ExactArgs(1),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			resp, err := c.Cluster.HealMember(cmd.Context(), &shoalv1.HealMemberRequest{Name: args[0], IKnowItIsFenced: fenced})
			if err != nil {
				return convert(err)
			}
			fmt.Printf("Member %s healed; moved: %s\n", args[0], orNone(resp.GetHealed()))
			if len(resp.GetSkipped()) > 0 {
				fmt.Printf("Not healed: %s\n", strings.Join(resp.GetSkipped(), "; "))
			}
			return nil
		}),
	}
	heal.Flags().BoolVar(&fenced, "i-know-it-is-fenced", false, "heal a member the cluster does not see offline: you vouch it is dead or fenced (otherwise two copies could run)")
	restore := &cobra.Command{
		Use: "restore NAME", Short: "Bring an evacuated member back, move back what the evacuation moved and restart what it stopped", Args: cobra.ExactArgs(1),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			resp, err := c.Cluster.RestoreMember(cmd.Context(), &shoalv1.RestoreMemberRequest{Name: args[0]})
			if err != nil {
				return convert(err)
			}
			fmt.Printf("Member %s restored; moved back: %s; started: %s\n", args[0], strings.Join(resp.GetMovedBack(), ", "), strings.Join(resp.GetStarted(), ", "))
			return nil
		}),
	}
	cfg := &cobra.Command{Use: "config", Short: "Cluster-wide keys: cluster.scheduler (spread|binpack), cluster.max_voters (3|5)"}
	cfg.AddCommand(&cobra.Command{
		Use: "set KEY=VALUE...", Short: "Set cluster-wide keys", Args: cobra.MinimumNArgs(1),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			kv, err := parseKV("config", args)
			if err != nil {
				return err
			}
			_, err = c.Cluster.UpdateClusterConfig(cmd.Context(), &shoalv1.UpdateClusterConfigRequest{Set: kv})
			return convert(err)
		}),
	}, &cobra.Command{
		Use: "unset KEY...", Short: "Unset cluster-wide keys", Args: cobra.MinimumNArgs(1),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			_, err := c.Cluster.UpdateClusterConfig(cmd.Context(), &shoalv1.UpdateClusterConfigRequest{Unset: args})
			return convert(err)
		}),
	}, &cobra.Command{
		Use: "show", Short: "Show cluster-wide keys", Args: cobra.NoArgs,
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			resp, err := c.Cluster.GetClusterConfig(cmd.Context(), &shoalv1.GetClusterConfigRequest{})
			if err != nil {
				return convert(err)
			}
			for _, k := range sortedMapKeys(resp.GetConfig()) {
				fmt.Printf("%s: %s\n", k, resp.GetConfig()[k])
			}
			return nil
		}),
	})
	cmd.AddCommand(add, list, remove, evacuate, restore, heal, cfg, a.trustCmd(), a.tokenCmd())
	return cmd
}

// orNone joins a list, or says "none".
func orNone(items []string) string {
	if len(items) == 0 {
		return "none"
	}
	return strings.Join(items, ", ")
}
