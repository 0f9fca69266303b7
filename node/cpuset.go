package node

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	goruntime "runtime"
	"slices"
	"strconv"
	"strings"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/internal/config"
	"github.com/shoal-dev/shoal/node/runtime"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// CPU placement, as LXD does it (its deviceTaskBalance): limits.cpu=N
// means "N CPUs, chosen by this member"; limits.cpu=0-1,3 pins exactly
// those. Each time a container starts or stops here, or its limits.cpu
// changes, the choice is made again for every running container and the
// cpusets that changed are written live. The choice is a pure function of
// the running containers and their limits.cpu, so a restarted daemon
// derives the same one.

// cpuDemand is what one running container's limits.cpu asks for.
type cpuDemand struct {
	Name string
	// Count is limits.cpu=N: N CPUs, chosen by balanceCPUs.
	Count int
	// Pinned is limits.cpu=SET: exactly these CPUs.
	Pinned []int
}

// balanceCPUs returns the cpuset ("0-1,3") of every demand on a host whose
// usable CPUs are online. A pinned set stays as given and loads each of its
// CPUs by one; then, in name order, each count takes the least loaded CPUs
// (ties to the lower CPU number), loading each by one. A count above the
// online CPUs gets them all (validation refuses one above the host's).
func balanceCPUs(online []int, demands []cpuDemand) map[string]string {
	out := make(map[string]string, len(demands))
	load := make(map[int]int, len(online))
	for _, d := range demands {
		if d.Count > 0 {
			continue
		}
		out[d.Name] = formatCPUs(d.Pinned)
		for _, c := range d.Pinned {
			load[c]++
		}
	}
	counted := slices.Clone(demands)
	slices.SortFunc(counted, func(a, b cpuDemand) int { return cmp.Compare(a.Name, b.Name) })
	cpus := slices.Clone(online)
	for _, d := range counted {
		if d.Count <= 0 {
			continue
		}
		slices.SortFunc(cpus, func(a, b int) int { return cmp.Or(cmp.Compare(load[a], load[b]), cmp.Compare(a, b)) })
		pick := slices.Clone(cpus[:min(d.Count, len(cpus))])
		for _, c := range pick {
			load[c]++
		}
		out[d.Name] = formatCPUs(pick)
	}
	return out
}

// parseCPUs parses a cpuset list ("0-1,3") into sorted, distinct CPUs.
func parseCPUs(s string) ([]int, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	var out []int
	for _, part := range strings.Split(s, ",") {
		lo, hi, ranged := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil || a < 0 {
			return nil, fmt.Errorf("cpuset %q: bad CPU %q", s, lo)
		}
		b := a
		if ranged {
			if b, err = strconv.Atoi(hi); err != nil || b < a {
				return nil, fmt.Errorf("cpuset %q: bad range %q", s, part)
			}
		}
		for c := a; c <= b; c++ {
			out = append(out, c)
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// formatCPUs writes CPUs as the kernel lists a cpuset: sorted, each run
// of consecutive CPUs as a range ("0-2,5,7-8").
func formatCPUs(cpus []int) string {
	cpus = slices.Compact(slices.Sorted(slices.Values(cpus)))
	var b strings.Builder
	for i := 0; i < len(cpus); {
		j := i
		for j+1 < len(cpus) && cpus[j+1] == cpus[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(cpus[i]))
		if j > i {
			b.WriteString("-" + strconv.Itoa(cpus[j]))
		}
		i = j + 1
	}
	return b.String()
}

// onlineCPUs are the host's online CPUs (all of 0..NumCPU-1 when
// /sys does not say).
func onlineCPUs() []int {
	if b, err := os.ReadFile("/sys/devices/system/cpu/online"); err == nil {
		if cpus, err := parseCPUs(string(b)); err == nil && len(cpus) > 0 {
			return cpus
		}
	}
	cpus := make([]int, goruntime.NumCPU())
	for i := range cpus {
		cpus[i] = i
	}
	return cpus
}

// cpuDemandOf reads a container's limits.cpu; ok is false without one (or
// with one that does not parse: the container's own start reports that).
func cpuDemandOf(name string, cfg map[string]string) (d cpuDemand, ok bool) {
	v := cfg["limits.cpu"]
	if v == "" {
		return d, false
	}
	d.Name = name
	if n, err := strconv.Atoi(v); err == nil {
		d.Count = n
		return d, n > 0
	}
	cpus, err := parseCPUs(v)
	if err != nil || len(cpus) == 0 {
		return d, false
	}
	d.Pinned = cpus
	return d, true
}

// cpuPlan balances the CPUs of this host over the containers running here
// (owned, or restored here by a live move not yet committed) and also
// starting, which is about to start ("" for none).
func (n *Node) cpuPlan(ctx context.Context, starting string) map[string]string {
	var demands []cpuDemand
	for _, ct := range n.fsm.Containers() {
		name := ct.GetName()
		if _, in := n.incoming.Load(name); ct.GetNode() != n.cfg.Name && !in {
			continue
		}
		d, ok := cpuDemandOf(name, cluster.ExpandedConfig(ct))
		if !ok {
			continue
		}
		if name != starting {
			st, err := n.rt.State(ctx, name)
			if err != nil || st.Status == runtime.StatusStopped {
				continue
			}
		}
		demands = append(demands, d)
	}
	return balanceCPUs(onlineCPUs(), demands)
}

// limits returns the runtime limits of ct here: a limits.cpu count becomes
// the CPUs the balance picks for it (counting ct as running).
func (n *Node) limits(ctx context.Context, ct *shoalv1.Container) (runtime.Limits, error) {
	lim, err := config.ParseLimits(cluster.ExpandedConfig(ct))
	if err != nil {
		return runtime.Limits{}, err
	}
	rl := runtimeLimits(lim)
	if d, ok := cpuDemandOf(ct.GetName(), cluster.ExpandedConfig(ct)); ok {
		if d.Count > 0 {
			rl.CPUSet = n.cpuPlan(ctx, ct.GetName())[ct.GetName()]
		} else {
			rl.CPUSet = formatCPUs(d.Pinned)
		}
	}
	return rl, nil
}

// kickCPUs asks the CPU balancer to run (a kick while it runs folds into
// one more pass). It never blocks.
func (n *Node) kickCPUs() {
	select {
	case n.cpuKick <- struct{}{}:
	default:
	}
}

// runCPUs balances CPUs on each kick until ctx ends or the node closes.
func (n *Node) runCPUs(ctx context.Context) {
	for {
		select {
		case <-n.stop:
			return
		case <-ctx.Done():
			return
		case <-n.cpuKick:
			n.rebalanceCPUs(ctx)
		}
	}
}

// rebalanceCPUs makes the cpuset of every running container with a
// limits.cpu match the balance, live, in name order.
func (n *Node) rebalanceCPUs(ctx context.Context) {
	plan := n.cpuPlan(ctx, "")
	for _, name := range sortedKeys(plan) {
		cur, err := n.rt.CPUSet(ctx, name)
		if err != nil {
			continue // stopped meanwhile: its stop kicks again
		}
		if a, err := parseCPUs(cur); err == nil && formatCPUs(a) == plan[name] {
			continue
		}
		if err := n.moveCPUs(ctx, name); err != nil {
			n.log.Warn("move to other CPUs", "container", name, "err", err)
		}
	}
}

// moveCPUs applies a running container's limits again, under its lock,
// with the CPUs the balance picks for it now.
func (n *Node) moveCPUs(ctx context.Context, name string) error {
	unlock := n.locks.lock("ct/" + name)
	defer unlock()
	if _, held := n.outgoing.Load(name); held {
		return nil // a live move holds it frozen
	}
	ct, err := n.fsm.Container(name)
	if errors.Is(err, cluster.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if _, in := n.incoming.Load(name); ct.GetNode() != n.cfg.Name && !in {
		return nil
	}
	if st, err := n.rt.State(ctx, name); err != nil || st.Status == runtime.StatusStopped {
		return nil
	}
	lim, err := n.limits(ctx, ct)
	if err != nil {
		return err
	}
	if err := n.rt.SetLimits(ctx, name, lim); err != nil {
		return fmt.Errorf("apply limits to %s: %w", name, err)
	}
	key := configKey(cluster.ExpandedConfig(ct))
	if prev, _ := n.applied.Swap(name, key); prev != key {
		n.kickCPUs() // a config change came with it: the others follow
	}
	n.log.Info("CPUs rebalanced", "container", name, "cpus", lim.CPUSet)
	return nil
}
