package harness

import (
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/shoal-dev/shoal/tests/netns"
)

// Member is one shoald on a simulated host (its own network and mount
// namespace, see tests/netns).
type Member struct {
	*Daemon
	Host *netns.Host
}

// Listen is the member's cluster address.
func (m *Member) Listen() string { return net.JoinHostPort(m.Host.IP.String(), "8443") }

// StartMember starts shoald on a simulated host: it bootstraps a new
// cluster, or joins one when token is set.
func StartMember(t T, binDir string, h *netns.Host, token string, extra ...string) *Member {
	t.Helper()
	args := append([]string{"--listen", net.JoinHostPort(h.IP.String(), "8443")}, extra...)
	var env []string
	if token != "" {
		// As the README joins: never on the command line, which every
		// local user reads.
		env = []string{"SHOAL_JOIN_TOKEN=" + token}
	}
	d := StartDaemonWith(t, binDir, Options{Name: h.Name, Args: args, Command: h.Command, Env: env})
	return &Member{Daemon: d, Host: h}
}

// StartCluster makes an underlay with n simulated hosts named n1..nN, starts
// shoald on the first, and joins the others with tokens it issues. It
// returns once all voters (up to three) are promoted.
func StartCluster(t T, binDir string, n int, extra ...string) (*netns.Underlay, []*Member) {
	t.Helper()
	u, err := netns.NewUnderlay(t)
	if err != nil {
		t.Fatalf("underlay: %v", err)
	}
	var ms []*Member
	for i := 1; i <= n; i++ {
		h, err := u.AddHost(fmt.Sprintf("n%d", i))
		if err != nil {
			t.Fatalf("host: %v", err)
		}
		tok := ""
		if i > 1 {
			tok = strings.TrimSpace(ms[0].MustShoal("cluster", "add", h.Name))
		}
		ms = append(ms, StartMember(t, binDir, h, tok, extra...))
	}
	want := min(n, 3)
	netns.WaitFor(t, fmt.Sprintf("%d voters", want), 60*time.Second, func() bool {
		voters := 0
		for _, r := range ms[0].Members() {
			if r.Role == "leader" || r.Role == "voter" {
				voters++
			}
		}
		return voters == want
	})
	return u, ms
}

// MemberRow is a line of `shoal cluster list`.
type MemberRow struct {
	Name, Address, Role, Status string
}

// Members returns the cluster as this daemon reports it (empty on error).
func (d *Daemon) Members() map[string]MemberRow {
	out, _, code := d.Shoal("cluster", "list", "--format", "json")
	rows := map[string]MemberRow{}
	if code != 0 {
		return rows
	}
	var resp struct{ Members []MemberRow }
	if json.Unmarshal([]byte(out), &resp) != nil {
		return rows
	}
	for _, r := range resp.Members {
		rows[r.Name] = r
	}
	return rows
}
