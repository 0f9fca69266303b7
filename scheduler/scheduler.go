package scheduler

import (
	"errors"
	"fmt"
)

// Sentinel errors. Errors returned by this package wrap one of them.
var (
	// ErrNoFit means no node passes the filters; the error is a *NoFitError
	// that lists every node and why it was rejected.
	ErrNoFit = errors.New("no node fits")
	// ErrUnknownNode means a node name is not in the snapshot.
	ErrUnknownNode = errors.New("unknown node")
	// ErrUnknownContainer means a container name is not in the snapshot.
	ErrUnknownContainer = errors.New("unknown container")
	// ErrDuplicate means a node or container name appears twice.
	ErrDuplicate = errors.New("duplicate name")
	// ErrInvalid means an input value is out of range (a negative size, ...).
	ErrInvalid = errors.New("invalid scheduler input")
	// ErrUnknownStrategy means ParseStrategy got a name it does not know.
	ErrUnknownStrategy = errors.New("unknown scheduler strategy")
)

// Node statuses. Only StatusOnline nodes are eligible; any other value
// (including ones this package does not know) rejects the node.
const (
	StatusOnline    = "online"
	StatusOffline   = "offline"
	StatusEvacuated = "evacuated"
)

// Load shares of a container without a limit. Such a container reserves
// nothing, so it never makes a node fail the capacity filter, but it does
// use the host: for scoring it counts as this much CPU and memory. Without
// this, containers launched without limits would all look free and spread
// would stack them on the lowest-named node.
const (
	UnlimitedCPUMillis   = 100       // 0.1 CPU
	UnlimitedMemoryBytes = 128 << 20 // 128MiB
)

// Node is one cluster member as the scheduler sees it.
type Node struct {
	Name        string
	Status      string            // StatusOnline, StatusOffline, StatusEvacuated
	CPUMillis   int64             // CPU capacity in millicores (2000 = 2 CPUs); <= 0 makes the node ineligible
	MemoryBytes int64             // memory capacity; <= 0 makes the node ineligible
	Labels      map[string]string // matched by Request.Constraints
	// Unenforceable lists the container config keys this node's host
	// cannot enforce (limits.disk.priority without BFQ), each with a
	// one-line reason; a request setting one of them never lands here.
	Unenforceable map[string]string
}

// Container is an existing placement: a container the FSM assigns to Node,
// whatever its power state.
type Container struct {
	Name        string
	Node        string
	CPUMillis   int64  // reserved CPU (limits.cpu or its allowance); 0 = unlimited
	MemoryBytes int64  // reserved memory (limits.memory); 0 = unlimited
	Group       string // scheduler.group, "" for none
}

// Request asks for a node for a new container.
type Request struct {
	Name        string
	CPUMillis   int64             // CPU to reserve; 0 = unlimited (reserves nothing)
	MemoryBytes int64             // memory to reserve; 0 = unlimited
	Target      string            // --target: only this node is considered (it must still pass every filter)
	Constraints map[string]string // scheduler.constraint=key=value: node labels that must all match exactly
	// Keys are the config keys the container sets; a node listing one of
	// them in Node.Unenforceable is rejected.
	Keys []string
	// Group is the spread group (scheduler.group). Spreading is soft: among
	// nodes that pass the filters, those running the fewest members of the
	// group win before the strategy score is looked at.
	Group string
	// MaxPerNode, when > 0, makes the group spread hard: a node already
	// running MaxPerNode members of Group is rejected. 1 means "distinct
	// nodes" (anti-affinity). 0 leaves the spread soft. Ignored without Group.
	MaxPerNode int
}

// Strategy ranks the nodes that pass the filters (cluster.scheduler).
type Strategy uint8

const (
	// Spread, the default, picks the least loaded node: the lowest dominant
	// load fraction (the larger of CPU and memory load over capacity) after
	// adding the request.
	Spread Strategy = iota
	// Binpack picks the most loaded node that still fits, to keep other
	// nodes empty. A node whose load fraction would pass 1 (possible only
	// through unlimited containers, which reserve nothing) ranks after every
	// node that stays within 1, least overloaded first, so binpack does not
	// pile unlimited containers onto one node without bound.
	Binpack
)

// String returns the config value of the strategy.
func (s Strategy) String() string {
	switch s {
	case Spread:
		return "spread"
	case Binpack:
		return "binpack"
	}
	return fmt.Sprintf("Strategy(%d)", uint8(s))
}

// ParseStrategy parses a cluster.scheduler value: "spread" or "binpack";
// "" means the default, Spread.
func ParseStrategy(v string) (Strategy, error) {
	switch v {
	case "", "spread":
		return Spread, nil
	case "binpack":
		return Binpack, nil
	}
	return Spread, fmt.Errorf("%w %q: want spread or binpack", ErrUnknownStrategy, v)
}

func (r *Request) validate() error {
	switch {
	case r.CPUMillis < 0:
		return fmt.Errorf("%w: request %q: negative CPU %d", ErrInvalid, r.Name, r.CPUMillis)
	case r.MemoryBytes < 0:
		return fmt.Errorf("%w: request %q: negative memory %d", ErrInvalid, r.Name, r.MemoryBytes)
	case r.MaxPerNode < 0:
		return fmt.Errorf("%w: request %q: negative max per node %d", ErrInvalid, r.Name, r.MaxPerNode)
	}
	return nil
}
