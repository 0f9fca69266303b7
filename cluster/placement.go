package cluster

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/shoal-dev/shoal/internal/config"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
	"github.com/shoal-dev/shoal/scheduler"
)

// Config keys that steer placement.
const (
	KeyGroup           = "scheduler.group"
	KeyGroupMaxPerNode = "scheduler.group.max_per_node"
	KeyConstraint      = "scheduler.constraint"
)

// PlacementRequest turns a container's config into the scheduler's request:
// what it reserves (limits.cpu as whole CPUs or its allowance, limits.memory),
// its spread group and label constraints, and the keys it sets (a node
// whose host cannot enforce one is not chosen). target pins a node ("" for
// any).
func PlacementRequest(name string, cfg map[string]string, target string) (scheduler.Request, error) {
	req := scheduler.Request{Name: name, Target: target, Group: cfg[KeyGroup]}
	for k, v := range cfg {
		if v != "" {
			req.Keys = append(req.Keys, k)
		}
	}
	slices.Sort(req.Keys)
	lim, err := config.ParseLimits(cfg)
	if err != nil {
		return req, err
	}
	switch {
	case lim.CPUQuotaUs > 0 && lim.CPUPeriodUs > 0:
		req.CPUMillis = lim.CPUQuotaUs * 1000 / lim.CPUPeriodUs
	case lim.CPUSet != "":
		req.CPUMillis = int64(cpuCount(lim.CPUSet)) * 1000
	}
	req.MemoryBytes = lim.MemoryBytes
	if v := cfg[KeyGroupMaxPerNode]; v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return req, &config.InvalidError{Field: KeyGroupMaxPerNode, Msg: fmt.Sprintf("%q is not a non-negative integer", v)}
		}
		req.MaxPerNode = n
	}
	if v := cfg[KeyConstraint]; v != "" {
		req.Constraints = map[string]string{}
		for _, kv := range strings.Split(v, ",") {
			k, val, ok := strings.Cut(kv, "=")
			if !ok || k == "" {
				return req, &config.InvalidError{Field: KeyConstraint, Msg: fmt.Sprintf("%q is not KEY=VALUE[,KEY=VALUE...]", v)}
			}
			req.Constraints[k] = val
		}
	}
	return req, nil
}

// cpuCount counts the CPUs of a cpuset such as "0-1,3".
func cpuCount(set string) int {
	n := 0
	for _, part := range strings.Split(set, ",") {
		lo, hi, ok := strings.Cut(part, "-")
		a, _ := strconv.Atoi(lo)
		b := a
		if ok {
			b, _ = strconv.Atoi(hi)
		}
		n += b - a + 1
	}
	return n
}

// snapshotLocked builds the scheduler's view of the state.
func (s *state) snapshotLocked() (*scheduler.Snapshot, error) {
	nodes := make([]scheduler.Node, 0, len(s.nodes))
	for _, k := range sortedKeys(s.nodes) {
		n := s.nodes[k]
		nodes = append(nodes, scheduler.Node{Name: n.GetName(), Status: n.GetStatus(), CPUMillis: n.GetCpuMillis(),
			MemoryBytes: n.GetMemoryBytes(), Labels: n.GetLabels(), Unenforceable: n.GetUnenforceableKeys()})
	}
	cts := make([]scheduler.Container, 0, len(s.containers))
	for _, k := range sortedKeys(s.containers) {
		ct := s.containers[k]
		if _, ok := s.nodes[ct.GetNode()]; !ok {
			continue
		}
		req, err := PlacementRequest(ct.GetName(), ExpandedConfig(ct), "")
		if err != nil {
			continue
		}
		cts = append(cts, scheduler.Container{Name: ct.GetName(), Node: ct.GetNode(), CPUMillis: req.CPUMillis,
			MemoryBytes: req.MemoryBytes, Group: req.Group})
	}
	return scheduler.NewSnapshot(nodes, cts)
}

// SchedulerSnapshot returns the scheduler's view of the current state.
func (f *FSM) SchedulerSnapshot() (*scheduler.Snapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.s.snapshotLocked()
}

// checkPlacement re-checks, inside Apply, that a new container still fits
// the node it was placed on, so concurrent creates never oversubscribe a
// node. The check is integer arithmetic over replicated state: every
// replica reaches the same verdict. Nodes without a record (a cluster that
// predates node records) are not checked. It returns what the scheduler's
// view records for ct once it is applied (ok false: nothing, as
// schedEntry).
func (s *state) checkPlacement(ct *shoalv1.Container) (e scheduler.Container, ok bool, err error) {
	if _, known := s.nodes[ct.GetNode()]; !known {
		return e, false, nil
	}
	snap, err := s.schedLocked()
	if err != nil {
		return e, false, err
	}
	req, err := PlacementRequest(ct.GetName(), ExpandedConfig(ct), "")
	if err != nil {
		return e, false, err
	}
	if err := scheduler.Check(snap, ct.GetNode(), req); err != nil {
		return e, false, err
	}
	return scheduler.Container{Name: ct.GetName(), Node: ct.GetNode(), CPUMillis: req.CPUMillis, MemoryBytes: req.MemoryBytes, Group: req.Group}, true, nil
}

// fitsHere is fitsLocked inside Apply (the write lock held), on the
// FSM's own view: ct's reservation is taken out for the check and put
// back after, whatever the verdict.
func (s *state) fitsHere(ct *shoalv1.Container, node string) error {
	snap, err := s.schedLocked()
	if err != nil {
		return err
	}
	req, err := PlacementRequest(ct.GetName(), ExpandedConfig(ct), "")
	if err != nil {
		return err
	}
	s.schedRemove(ct.GetName())
	defer s.schedAdd(ct)
	if s.sched != snap { // the view was dropped: check on a rebuilt one
		if snap, err = s.schedLocked(); err != nil {
			return err
		}
		s.schedRemove(ct.GetName())
	}
	return scheduler.Check(snap, node, req)
}

// Place picks a member for req over the FSM's current view without
// copying it (scheduler.PlaceAvoiding: down lists members to treat as
// not online, with why). Any number of placements run at once, beside
// reads; Apply waits for them.
func (f *FSM) Place(req scheduler.Request, strat scheduler.Strategy, down map[string]string) (string, scheduler.Explanation, error) {
	f.mu.RLock()
	for f.s.sched == nil {
		f.mu.RUnlock()
		f.mu.Lock()
		_, err := f.s.schedLocked()
		f.mu.Unlock()
		if err != nil {
			return "", scheduler.Explanation{Strategy: strat}, err
		}
		f.mu.RLock()
	}
	defer f.mu.RUnlock()
	return scheduler.PlaceAvoiding(f.s.sched, req, strat, down)
}

// Fits says why ct could not run on node beside what node already runs
// (scheduler.Check with ct's own reservation taken out wherever it is), or
// nil when it can: a heal's check of where a container may go.
func (f *FSM) Fits(ct *shoalv1.Container, node string) error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.s.fitsLocked(ct, node)
}

// fitsLocked is Fits with the state already locked.
func (s *state) fitsLocked(ct *shoalv1.Container, node string) error {
	snap, err := s.snapshotLocked()
	if err != nil {
		return err
	}
	if err := snap.Remove(ct.GetName()); err != nil && !errors.Is(err, scheduler.ErrUnknownContainer) {
		return err
	}
	req, err := PlacementRequest(ct.GetName(), ExpandedConfig(ct), "")
	if err != nil {
		return err
	}
	return scheduler.Check(snap, node, req)
}
