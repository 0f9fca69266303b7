package scheduler

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Filter names the filter that rejected a node.
type Filter uint8

// Filters, in the order they are applied; a node is rejected by the first
// that fails.
const (
	FilterStatus     Filter = iota + 1 // not online, or no capacity reported
	FilterTarget                       // not the --target node
	FilterConstraint                   // a scheduler.constraint label is missing or differs
	FilterHost                         // the host cannot enforce a config key the container sets
	FilterGroup                        // already runs MaxPerNode members of the group
	FilterCapacity                     // not enough free CPU or memory
)

// String returns the filter's name.
func (f Filter) String() string {
	switch f {
	case FilterStatus:
		return "status"
	case FilterTarget:
		return "target"
	case FilterConstraint:
		return "constraint"
	case FilterHost:
		return "host"
	case FilterGroup:
		return "group"
	case FilterCapacity:
		return "capacity"
	}
	return "Filter(" + strconv.Itoa(int(f)) + ")"
}

// Rejection says why one node cannot take a request.
type Rejection struct {
	Node   string
	Filter Filter
	Reason string // for people: "offline", "needs 512MiB memory, 100MiB free"
}

// String returns "node: reason".
func (r Rejection) String() string { return r.Node + ": " + r.Reason }

// NoFitError is returned when a request fits nowhere (Place) or not on the
// node asked about (Check). It wraps ErrNoFit.
type NoFitError struct {
	Container  string
	Node       string      // set by Check: the node that was checked
	Rejections []Rejection // by node name
}

// Error lists every rejected node and its reason.
func (e *NoFitError) Error() string {
	var b strings.Builder
	if e.Node != "" {
		fmt.Fprintf(&b, "cannot run %s on %s: ", e.Container, e.Node)
		for i, r := range e.Rejections {
			if i > 0 {
				b.WriteString("; ")
			}
			b.WriteString(r.Reason)
		}
		return b.String()
	}
	fmt.Fprintf(&b, "no node can run %s: ", e.Container)
	if len(e.Rejections) == 0 {
		b.WriteString("the cluster has no nodes")
	}
	for i, r := range e.Rejections {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(r.String())
	}
	return b.String()
}

// Unwrap returns ErrNoFit.
func (e *NoFitError) Unwrap() error { return ErrNoFit }

// rejections explains every node considered for req, in name order. It is
// the slow path, run only when nothing fits.
func (s *Snapshot) rejections(req *Request) []Rejection { return s.rejectionsAvoiding(req, nil) }

// rejectionsAvoiding is rejections with the nodes in down rejected by the
// status filter first, for their reason.
func (s *Snapshot) rejectionsAvoiding(req *Request, down map[string]string) []Rejection {
	ids := s.all
	if id, ok := s.ids[req.Target]; ok && req.Target != "" {
		ids = s.all[id : id+1]
	}
	var out []Rejection
	for _, id := range ids {
		if why, ok := down[s.nodes[id].Name]; ok && s.nodes[id].Status == StatusOnline {
			out = append(out, Rejection{Node: s.nodes[id].Name, Filter: FilterStatus, Reason: why})
			continue
		}
		if r, bad := s.reject(id, req); bad {
			out = append(out, r)
		}
	}
	return out
}

// reject applies every filter to one node, in order, and returns the first
// that fails. It is the reference the placement loop must agree with, and
// uses integers only.
func (s *Snapshot) reject(id int32, req *Request) (Rejection, bool) {
	nd, h := &s.nodes[id], &s.hot[id]
	no := func(f Filter, format string, args ...any) (Rejection, bool) {
		return Rejection{Node: nd.Name, Filter: f, Reason: fmt.Sprintf(format, args...)}, true
	}
	switch {
	case nd.Status == "":
		return no(FilterStatus, "no status")
	case nd.Status != StatusOnline:
		return no(FilterStatus, "%s", nd.Status)
	case nd.CPUMillis <= 0 || nd.MemoryBytes <= 0:
		return no(FilterStatus, "no CPU or memory capacity reported")
	case req.Target != "" && req.Target != nd.Name:
		return no(FilterTarget, "not the --target node %s", req.Target)
	}
	keys := make([]string, 0, len(req.Constraints))
	for k := range req.Constraints {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		want := req.Constraints[k]
		got, ok := nd.Labels[k]
		if !ok {
			return no(FilterConstraint, "no label %s (want %s=%s)", k, k, want)
		}
		if got != want {
			return no(FilterConstraint, "label %s=%s does not match %s=%s", k, got, k, want)
		}
	}
	for _, k := range sortedKeys(req.Keys) {
		if why, ok := nd.Unenforceable[k]; ok {
			return no(FilterHost, "%s: %s", k, why)
		}
	}
	if req.Group != "" && req.MaxPerNode > 0 {
		if g := s.groups[req.Group]; g != nil {
			if n := int(g.count(id)); n >= req.MaxPerNode {
				return no(FilterGroup, "already runs %d of group %s (max %d per node)", n, req.Group, req.MaxPerNode)
			}
		}
	}
	var short []string
	if req.CPUMillis > 0 && h.freeCPU < req.CPUMillis {
		short = append(short, fmt.Sprintf("%s CPU, %s free", formatCPU(req.CPUMillis), formatCPU(max(h.freeCPU, 0))))
	}
	if req.MemoryBytes > 0 && h.freeMem < req.MemoryBytes {
		short = append(short, fmt.Sprintf("%s memory, %s free", formatBytes(req.MemoryBytes), formatBytes(max(h.freeMem, 0))))
	}
	if len(short) > 0 {
		return no(FilterCapacity, "needs %s", strings.Join(short, ", and "))
	}
	return Rejection{}, false
}

// sortedKeys returns keys sorted, without changing the caller's slice.
func sortedKeys(keys []string) []string {
	if slices.IsSorted(keys) {
		return keys
	}
	return slices.Sorted(slices.Values(keys))
}

// AllHost reports whether every node was rejected because its host cannot
// enforce a config key the container sets (and at least one node was):
// the request cannot fit anywhere until the config changes.
func (e *NoFitError) AllHost() bool {
	for _, r := range e.Rejections {
		if r.Filter != FilterHost {
			return false
		}
	}
	return len(e.Rejections) > 0
}

// formatCPU prints millicores as CPUs: 2000 → "2", 1500 → "1.5".
func formatCPU(m int64) string {
	return strconv.FormatFloat(float64(m)/1000, 'f', -1, 64)
}

// formatBytes prints a size in binary units with at most one decimal:
// 536870912 → "512MiB", 1610612736 → "1.5GiB".
func formatBytes(n int64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	u, v := 0, float64(n)
	for v >= 1024 && u < len(units)-1 {
		v /= 1024
		u++
	}
	s := strconv.FormatFloat(v, 'f', 1, 64)
	return strings.TrimSuffix(s, ".0") + units[u]
}
