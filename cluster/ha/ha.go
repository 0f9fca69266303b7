package ha

import (
	"cmp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/shoal-dev/shoal/cluster"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// Config keys.
const (
	KeyEnabled  = "ha.enabled"
	KeyReplicas = "ha.replicas"
	KeyRPO      = "ha.rpo"
)

// Defaults for the keys a container leaves unset.
const (
	DefaultReplicas = 1
	DefaultRPO      = 10 * time.Second
)

// Policy is what a container's ha.* keys ask for.
type Policy struct {
	// Enabled: the container is replicated (and, later, healed).
	Enabled bool
	// Replicas is how many members hold a copy of its volume.
	Replicas int
	// RPO is the most data, in time, a failover may lose: the owner
	// replicates at least this often.
	RPO time.Duration
}

// PolicyOf reads a container's config (validated by internal/config).
func PolicyOf(cfg map[string]string) Policy {
	p := Policy{Replicas: DefaultReplicas, RPO: DefaultRPO}
	p.Enabled, _ = strconv.ParseBool(cfg[KeyEnabled])
	if n, err := strconv.Atoi(cfg[KeyReplicas]); err == nil && n > 0 {
		p.Replicas = n
	}
	if d, err := time.ParseDuration(cfg[KeyRPO]); err == nil && d > 0 {
		p.RPO = d
	}
	return p
}

// ChooseReplicas returns the members that should hold ct's replicas: the
// current ones while they stay eligible (a replica is costly to make; the
// newest first), then
// the eligible members holding the fewest replicas, by name on a tie.
// Eligible: online, not the owner, and carrying every label the
// container's scheduler.constraint asks for (a replica is where it would
// run after a failover). It returns fewer than the policy asks when fewer
// members are eligible. With fits set, new replicas go first to members
// where the container itself would fit (fits(member) == nil: a replica is
// where it runs after a failover), though a replica reserves none of its
// CPU or memory.
//
// With disk set, a member that holds no replica of ct yet is not eligible
// when disk(member) says its pool lacks the room for a copy of the
// container's volume: a replica slot reserves the container's disk.
func ChooseReplicas(ct *shoalv1.Container, nodes []*shoalv1.Node, all []*shoalv1.Container, fits, disk func(member string) error) []string {
	p := PolicyOf(cluster.ExpandedConfig(ct))
	if !p.Enabled {
		return nil
	}
	// The constraint is parsed as placement parses it (its config was
	// validated when it was set).
	req, _ := cluster.PlacementRequest(ct.GetName(), cluster.ExpandedConfig(ct), "")
	want := req.Constraints
	eligible := map[string]bool{}
	for _, n := range nodes {
		if n.GetName() == ct.GetNode() || n.GetStatus() != cluster.StatusOnline || !matches(n.GetLabels(), want) {
			continue
		}
		eligible[n.GetName()] = true
	}
	if disk != nil {
		holds := map[string]bool{}
		for _, r := range ct.GetReplicas() {
			holds[r.GetMember()] = true
		}
		for name := range eligible {
			if !holds[name] && disk(name) != nil {
				delete(eligible, name)
			}
		}
	}
	var out []string
	// The newest first: a member back from the dead holds an older copy
	// than the one that replaced it meanwhile.
	current := slices.Clone(ct.GetReplicas())
	slices.SortStableFunc(current, func(a, b *shoalv1.Replica) int { return cmp.Compare(b.GetTakenUnixNano(), a.GetTakenUnixNano()) })
	for _, r := range current {
		if eligible[r.GetMember()] && len(out) < p.Replicas {
			out = append(out, r.GetMember())
			delete(eligible, r.GetMember())
		}
	}
	if len(out) == p.Replicas {
		return out // the usual case: nothing new to place
	}
	load := map[string]int{}
	for _, c := range all {
		for _, r := range c.GetReplicas() {
			load[r.GetMember()]++
		}
	}
	rest := make([]string, 0, len(eligible))
	for name := range eligible {
		rest = append(rest, name)
	}
	room := map[string]bool{}
	for _, name := range rest {
		room[name] = fits == nil || fits(name) == nil
	}
	slices.SortFunc(rest, func(a, b string) int {
		return cmp.Or(boolCompare(room[b], room[a]), cmp.Compare(load[a], load[b]), strings.Compare(a, b))
	})
	for _, name := range rest {
		if len(out) == p.Replicas {
			break
		}
		out = append(out, name)
	}
	return out
}

// Parked reports whether a replica record is kept although its member is
// not chosen: the member is in the cluster but not online (dead, cut off
// or shut down). Its copy is useless for a failover meanwhile, and the
// slot is filled elsewhere, but when it comes back an increment on the
// snapshot it holds brings it up to date: the owner keeps that snapshot.
func Parked(r *shoalv1.Replica, nodes []*shoalv1.Node) bool {
	for _, n := range nodes {
		if n.GetName() == r.GetMember() {
			return n.GetStatus() != cluster.StatusOnline
		}
	}
	return false
}

// Lag is how far behind now a replica's data is.
func Lag(r *shoalv1.Replica, now time.Time) time.Duration {
	if r.GetTakenUnixNano() == 0 {
		return 0
	}
	return now.Sub(time.Unix(0, r.GetTakenUnixNano()))
}

func matches(labels, want map[string]string) bool {
	for k, v := range want {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// boolCompare orders false before true.
func boolCompare(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}
