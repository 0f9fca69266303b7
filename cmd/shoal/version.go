package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"github.com/spf13/cobra"

	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// version is the release, set at build time with
// -ldflags "-X main.version=1.2.3"; without it the module's build info
// says what was built.
var version string

// clientVersion describes this binary: the release or module version,
// else "devel" with the commit it was built from.
func clientVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if version != "" {
		return version
	}
	if !ok {
		return "unknown (no build information in the binary)"
	}
	v := bi.Main.Version
	if v == "" || v == "(devel)" {
		v = "devel"
	}
	var rev, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	var detail []string
	if rev != "" {
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if modified == "true" {
			rev += ", modified"
		}
		detail = append(detail, "git "+rev)
	}
	detail = append(detail, bi.GoVersion)
	return fmt.Sprintf("%s (%s)", v, strings.Join(detail, "; "))
}

// endpoint says where the client connects: a remote and its address, or
// the socket, and the address to match a member by ("" for the socket).
func (a *app) endpoint() (desc, addr string) {
	if r := a.remoteName(); r != "" && r != "local" {
		if dir, err := remotesDir(); err == nil {
			b, _ := os.ReadFile(filepath.Join(dir, r, "address"))
			addr = strings.TrimSpace(string(b))
		}
		return fmt.Sprintf("remote %s (%s)", r, addr), addr
	}
	if !strings.HasPrefix(a.socket, "/") && !strings.HasPrefix(a.socket, "unix://") {
		return a.socket, a.socket
	}
	return a.socket, ""
}

// serverLine names the member the client reaches, from the member list:
// the one with the address dialled, or the only one; through the socket
// of a cluster the API does not say which member it is.
func serverLine(desc, addr string, members []*shoalv1.Member) string {
	host := strings.TrimPrefix(strings.TrimPrefix(addr, "https://"), "http://")
	for _, m := range members {
		if host != "" && sameAddress(m.GetAddress(), host) {
			return fmt.Sprintf("%s via %s (%s, %s)", m.GetName(), desc, m.GetRole(), m.GetStatus())
		}
	}
	if len(members) == 1 {
		m := members[0]
		return fmt.Sprintf("%s via %s (%s, %s)", m.GetName(), desc, m.GetRole(), m.GetStatus())
	}
	var names []string
	for _, m := range members {
		names = append(names, m.GetName())
	}
	return fmt.Sprintf("%s, a member of a cluster of %d: %s", desc, len(members), strings.Join(names, ", "))
}

// sameAddress compares host:port addresses, "localhost" and 127.0.0.1 apart.
func sameAddress(a, b string) bool {
	if a == b {
		return true
	}
	ah, ap, err1 := net.SplitHostPort(a)
	bh, bp, err2 := net.SplitHostPort(b)
	return err1 == nil && err2 == nil && ap == bp && net.ParseIP(ah) != nil && net.ParseIP(ah).Equal(net.ParseIP(bh))
}

func (a *app) versionCmd() *cobra.Command {
	return &cobra.Command{
		Use: "version", Short: "Show the client's version and the server it reaches", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			fmt.Printf("Client version: %s\n", clientVersion())
			fmt.Println("Server version: not reported (Shoal's API has no version call)")
			desc, addr := a.endpoint()
			c, err := a.client()
			if err != nil {
				fmt.Printf("Server: %s (unreachable: %s)\n", desc, firstLine(err))
				return nil
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			resp, err := c.Cluster.ListMembers(ctx, &shoalv1.ListMembersRequest{})
			if err != nil {
				fmt.Printf("Server: %s (unreachable: %s)\n", desc, firstLine(convert(err)))
				return nil
			}
			fmt.Printf("Server: %s\n", serverLine(desc, addr, resp.GetMembers()))
			return nil
		},
	}
}
