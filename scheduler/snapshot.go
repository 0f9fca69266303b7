package scheduler

import (
	"fmt"
	"math"
	"slices"
	"strings"
)

// Snapshot is the scheduler's view of the cluster: the nodes and, per node,
// aggregates of the containers placed on it (reserved CPU and memory, load,
// members per spread group), so that placing is O(nodes) and never scans
// containers. Build it once with NewSnapshot and keep it current with Add,
// Remove and SetStatus; rebuild it when nodes join, leave or change labels,
// capacity or the keys they cannot enforce.
//
// Place, Check and Explain only read; any number may run at once. Add,
// Remove and SetStatus need exclusive access (the FSM apply goroutine).
type Snapshot struct {
	nodes []Node           // sorted by name; index = node id
	hot   []nodeHot        // parallel to nodes: what the placement loop reads
	ids   map[string]int32 // node name -> id
	all   []int32          // 0..len(nodes)-1, the candidates when nothing narrows them

	reserved []usage // per node: sum of reservations
	counts   []int32 // per node: number of containers

	labels        map[label]*posting
	unenforceable map[string]*posting // config key -> nodes that cannot enforce it
	groups        map[string]*group
	containers    map[string]placed
}

// nodeHot packs per node everything the inner placement loop touches into
// one cache line.
type nodeHot struct {
	freeCPU, freeMem int64   // capacity minus reservations (may be negative)
	loadCPU, loadMem float64 // reservations plus Unlimited* shares (integers, exact below 2^53)
	invCPU, invMem   float64 // 1/capacity
	eligible         bool    // online with capacity reported
}

type usage struct{ cpu, mem int64 }

type label struct{ key, value string }

// posting lists the nodes carrying one label both as ascending ids (to
// iterate) and as a bitset (to test membership).
type posting struct {
	ids  []int32
	bits []uint64
}

func (p *posting) has(i int32) bool { return p.bits[i>>6]&(1<<(uint(i)&63)) != 0 }

// add appends node id, which must be above every id already there.
func (p *posting) add(id int32) {
	p.ids = append(p.ids, id)
	p.bits[id>>6] |= 1 << (uint(id) & 63)
}

// group holds the members of one spread group per node, ascending by node id
// so the placement loop can merge it with its candidates without lookups.
type group struct {
	ids    []int32
	counts []int32
}

func (g *group) count(i int32) int32 {
	if k, ok := slices.BinarySearch(g.ids, i); ok {
		return g.counts[k]
	}
	return 0
}

type placed struct {
	node  int32
	cpu   int64
	mem   int64
	group string
}

// NewSnapshot builds a snapshot. Node names must be unique and non-empty;
// every container must name a known node, have a unique name and
// non-negative sizes. The inputs are copied.
func NewSnapshot(nodes []Node, containers []Container) (*Snapshot, error) {
	if len(nodes) > math.MaxInt32 {
		return nil, fmt.Errorf("%w: %d nodes", ErrInvalid, len(nodes))
	}
	s := &Snapshot{
		nodes:         slices.Clone(nodes),
		ids:           make(map[string]int32, len(nodes)),
		labels:        make(map[label]*posting),
		unenforceable: make(map[string]*posting),
		groups:        make(map[string]*group),
		containers:    make(map[string]placed, len(containers)),
	}
	slices.SortFunc(s.nodes, func(a, b Node) int { return strings.Compare(a.Name, b.Name) })
	n := len(s.nodes)
	s.hot = make([]nodeHot, n)
	s.all = make([]int32, n)
	s.reserved = make([]usage, n)
	s.counts = make([]int32, n)
	words := (n + 63) / 64
	for i := range s.nodes {
		nd := &s.nodes[i]
		if nd.Name == "" {
			return nil, fmt.Errorf("%w: node without a name", ErrInvalid)
		}
		if i > 0 && s.nodes[i-1].Name == nd.Name {
			return nil, fmt.Errorf("%w: node %q", ErrDuplicate, nd.Name)
		}
		id := int32(i)
		s.ids[nd.Name] = id
		s.all[i] = id
		nd.Labels = cloneMap(nd.Labels)
		for k, v := range nd.Labels {
			p := s.labels[label{k, v}]
			if p == nil {
				p = &posting{bits: make([]uint64, words)}
				s.labels[label{k, v}] = p
			}
			p.add(id)
		}
		nd.Unenforceable = cloneMap(nd.Unenforceable)
		for k := range nd.Unenforceable {
			p := s.unenforceable[k]
			if p == nil {
				p = &posting{bits: make([]uint64, words)}
				s.unenforceable[k] = p
			}
			p.add(id)
		}
		h := &s.hot[i]
		h.freeCPU, h.freeMem = nd.CPUMillis, nd.MemoryBytes
		if nd.CPUMillis > 0 {
			h.invCPU = 1 / float64(nd.CPUMillis)
		}
		if nd.MemoryBytes > 0 {
			h.invMem = 1 / float64(nd.MemoryBytes)
		}
		h.eligible = nd.Status == StatusOnline && nd.CPUMillis > 0 && nd.MemoryBytes > 0
	}
	for _, c := range containers {
		if err := s.Add(c); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func cloneMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	c := make(map[string]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// Add records a container placed on a node. It does not check capacity:
// the FSM calls Check first and Add once the placement is committed, and a
// snapshot built from existing state must accept whatever is there.
func (s *Snapshot) Add(c Container) error {
	id, ok := s.ids[c.Node]
	switch {
	case !ok:
		return fmt.Errorf("%w %q (container %q)", ErrUnknownNode, c.Node, c.Name)
	case c.CPUMillis < 0 || c.MemoryBytes < 0:
		return fmt.Errorf("%w: container %q: negative size", ErrInvalid, c.Name)
	}
	if _, dup := s.containers[c.Name]; dup {
		return fmt.Errorf("%w: container %q", ErrDuplicate, c.Name)
	}
	p := placed{node: id, cpu: c.CPUMillis, mem: c.MemoryBytes, group: c.Group}
	s.containers[c.Name] = p
	s.apply(p, 1)
	return nil
}

// Remove forgets a container (deleted, or moved: Remove then Add).
func (s *Snapshot) Remove(name string) error {
	p, ok := s.containers[name]
	if !ok {
		return fmt.Errorf("%w %q", ErrUnknownContainer, name)
	}
	delete(s.containers, name)
	s.apply(p, -1)
	return nil
}

// apply adds (sign 1) or subtracts (sign -1) a placement to the aggregates.
func (s *Snapshot) apply(p placed, sign int64) {
	h := &s.hot[p.node]
	lc, lm := loadOf(p.cpu, p.mem)
	h.freeCPU -= sign * p.cpu
	h.freeMem -= sign * p.mem
	h.loadCPU += float64(sign * lc)
	h.loadMem += float64(sign * lm)
	s.reserved[p.node].cpu += sign * p.cpu
	s.reserved[p.node].mem += sign * p.mem
	s.counts[p.node] += int32(sign)
	if p.group == "" {
		return
	}
	g := s.groups[p.group]
	if g == nil {
		g = &group{}
		s.groups[p.group] = g
	}
	k, found := slices.BinarySearch(g.ids, p.node)
	switch {
	case !found: // only when adding
		g.ids = slices.Insert(g.ids, k, p.node)
		g.counts = slices.Insert(g.counts, k, 1)
	case sign < 0 && g.counts[k] == 1:
		g.ids = slices.Delete(g.ids, k, k+1)
		g.counts = slices.Delete(g.counts, k, k+1)
		if len(g.ids) == 0 {
			delete(s.groups, p.group)
		}
	default:
		g.counts[k] += int32(sign)
	}
}

// loadOf is what a container counts for scoring: its reservation, or the
// Unlimited* share for a resource it does not limit.
func loadOf(cpu, mem int64) (int64, int64) {
	if cpu == 0 {
		cpu = UnlimitedCPUMillis
	}
	if mem == 0 {
		mem = UnlimitedMemoryBytes
	}
	return cpu, mem
}

// load is the node's dominant load fraction once a request adding qc CPU and
// qm memory load is placed: the larger of the CPU and memory fractions.
func (h *nodeHot) load(qc, qm float64) float64 {
	// The builtin max compiles without a branch; CPU- versus memory-bound
	// nodes alternate unpredictably, so a branch here mispredicts often.
	return max((h.loadCPU+qc)*h.invCPU, (h.loadMem+qm)*h.invMem)
}

// SetStatus changes a node's status (online, offline, evacuated).
func (s *Snapshot) SetStatus(node, status string) error {
	id, ok := s.ids[node]
	if !ok {
		return fmt.Errorf("%w %q", ErrUnknownNode, node)
	}
	nd := &s.nodes[id]
	nd.Status = status
	s.hot[id].eligible = status == StatusOnline && nd.CPUMillis > 0 && nd.MemoryBytes > 0
	return nil
}

// Usage is what is placed on one node.
type Usage struct {
	Containers  int   // containers placed on the node
	CPUMillis   int64 // reserved CPU
	MemoryBytes int64 // reserved memory
	FreeCPU     int64 // capacity minus reserved CPU (negative when overcommitted)
	FreeMemory  int64 // capacity minus reserved memory
}

// Usage reports what is placed on a node.
func (s *Snapshot) Usage(node string) (Usage, error) {
	id, ok := s.ids[node]
	if !ok {
		return Usage{}, fmt.Errorf("%w %q", ErrUnknownNode, node)
	}
	return Usage{
		Containers:  int(s.counts[id]),
		CPUMillis:   s.reserved[id].cpu,
		MemoryBytes: s.reserved[id].mem,
		FreeCPU:     s.hot[id].freeCPU,
		FreeMemory:  s.hot[id].freeMem,
	}, nil
}

// GroupCount reports how many members of a spread group run on a node.
func (s *Snapshot) GroupCount(node, group string) (int, error) {
	id, ok := s.ids[node]
	if !ok {
		return 0, fmt.Errorf("%w %q", ErrUnknownNode, node)
	}
	if g := s.groups[group]; g != nil && group != "" {
		return int(g.count(id)), nil
	}
	return 0, nil
}

// Len reports the number of nodes and containers in the snapshot.
func (s *Snapshot) Len() (nodes, containers int) { return len(s.nodes), len(s.containers) }
