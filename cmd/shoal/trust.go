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

// trustCmd is `shoal cluster trust`: the certificates the cluster issued.
func (a *app) trustCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "trust", Short: "List and revoke the certificates the cluster trusts"}
	var format string
	list := &cobra.Command{
		Use: "list", Aliases: []string{"ls"}, Short: "List issued certificates: name, role, fingerprint, issued, expiry, restrictions, status", Args: cobra.NoArgs,
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			if err := checkFormat(format); err != nil {
				return err
			}
			resp, err := c.Cluster.ListTrust(cmd.Context(), &shoalv1.ListTrustRequest{})
			if err != nil {
				return convert(err)
			}
			if format != "table" {
				return printData(os.Stdout, format, resp)
			}
			now := time.Now()
			var rows [][]string
			for _, e := range resp.GetEntries() {
				rows = append(rows, []string{e.GetName(), e.GetRole(), strings.TrimPrefix(e.GetFingerprint(), "sha256:")[:12],
					day(e.GetIssuedUnix()), day(e.GetExpiresUnix()), grantText(e.GetGrant()), trustStatus(e, now)})
			}
			table(os.Stdout, []string{"NAME", "ROLE", "FINGERPRINT", "ISSUED", "EXPIRES", "RESTRICTIONS", "STATUS"}, rows)
			return nil
		}),
	}
	list.Flags().StringVarP(&format, "format", "f", "table", "output format: "+formats)
	revoke := &cobra.Command{
		Use: "revoke NAME|FINGERPRINT", Short: "Revoke a certificate (all of a name's, or one by fingerprint): every member refuses it within a second, open streams included", Args: cobra.ExactArgs(1),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			resp, err := c.Cluster.RevokeTrust(cmd.Context(), &shoalv1.RevokeTrustRequest{NameOrFingerprint: args[0]})
			if err != nil {
				return convert(err)
			}
			for _, e := range resp.GetRevoked() {
				fmt.Printf("Revoked the %s certificate of %s (%s)\n", e.GetRole(), e.GetName(), strings.TrimPrefix(e.GetFingerprint(), "sha256:")[:12])
			}
			return nil
		}),
	}
	cmd.AddCommand(list, revoke)
	return cmd
}

// tokenCmd is `shoal cluster token`: pending join tokens.
func (a *app) tokenCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "List and revoke pending join tokens"}
	var format string
	list := &cobra.Command{
		Use: "list", Aliases: []string{"ls"}, Short: "List join tokens not yet used", Args: cobra.NoArgs,
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			if err := checkFormat(format); err != nil {
				return err
			}
			resp, err := c.Cluster.ListTokens(cmd.Context(), &shoalv1.ListTokensRequest{})
			if err != nil {
				return convert(err)
			}
			if format != "table" {
				return printData(os.Stdout, format, resp)
			}
			var rows [][]string
			for _, t := range resp.GetTokens() {
				exp := time.Unix(t.GetExpiresUnix(), 0).UTC().Format(time.RFC3339)
				if time.Now().Unix() >= t.GetExpiresUnix() {
					exp += " (expired)"
				}
				rows = append(rows, []string{t.GetName(), t.GetRole(), exp, grantText(t.GetGrant())})
			}
			table(os.Stdout, []string{"NAME", "ROLE", "EXPIRES", "RESTRICTIONS"}, rows)
			return nil
		}),
	}
	list.Flags().StringVarP(&format, "format", "f", "table", "output format: "+formats)
	revoke := &cobra.Command{
		Use: "revoke NAME", Short: "Revoke a pending join token", Args: cobra.ExactArgs(1),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			if _, err := c.Cluster.RevokeToken(cmd.Context(), &shoalv1.RevokeTokenRequest{Name: args[0]}); err != nil {
				return convert(err)
			}
			fmt.Printf("Join token for %s revoked\n", args[0])
			return nil
		}),
	}
	cmd.AddCommand(list, revoke)
	return cmd
}

func day(unix int64) string { return time.Unix(unix, 0).UTC().Format("2006-01-02 15:04") }

func grantText(g *shoalv1.Grant) string {
	if g == nil {
		return "-"
	}
	var parts []string
	for _, p := range g.GetContainerPrefixes() {
		parts = append(parts, p+"*")
	}
	if len(parts) == 0 {
		parts = append(parts, "all containers")
	}
	if g.GetReadOnly() {
		parts = append(parts, "read-only")
	}
	return strings.Join(parts, ",")
}

func trustStatus(e *shoalv1.TrustEntry, now time.Time) string {
	switch {
	case e.GetRevoked():
		return "REVOKED"
	case now.Unix() >= e.GetExpiresUnix():
		return "EXPIRED"
	}
	return "VALID"
}
