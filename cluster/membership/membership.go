package membership

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// ErrShutdown is returned by calls made after Shutdown.
var ErrShutdown = errors.New("membership is shut down")

// EventType says what happened to a member.
type EventType int

// Event types. Numbers are stable.
const (
	// EventJoin: a node joined, or came back after leaving or failing.
	EventJoin EventType = iota + 1
	// EventUpdate: a live node gossiped new meta (including Meta.Leaving
	// when it starts a graceful leave).
	EventUpdate
	// EventLeave: a node left gracefully (Leave). Never followed by Fail.
	EventLeave
	// EventFail: a node stopped answering and was declared dead.
	EventFail
)

// String returns "join", "update", "leave" or "fail".
func (t EventType) String() string {
	switch t {
	case EventJoin:
		return "join"
	case EventUpdate:
		return "update"
	case EventLeave:
		return "leave"
	case EventFail:
		return "fail"
	}
	return fmt.Sprintf("EventType(%d)", int(t))
}

// Event is one membership change as seen by the local node.
type Event struct {
	// Type is what happened.
	Type EventType
	// Node is the member's name.
	Node string
	// Meta is the member's meta as last gossiped.
	Meta Meta
}

// MemberState is a member's liveness as seen by the local node.
type MemberState int

// Member states. memberlist keeps "suspect" to itself (its only view of it,
// Memberlist.Members, hands out pointers it mutates under its own lock), so
// a suspect node is reported Alive until it is declared dead.
const (
	// StateAlive: the node answers probes (or is suspect but not yet dead).
	StateAlive MemberState = iota + 1
	// StateDead: the node was declared dead by failure detection.
	StateDead
	// StateLeft: the node left gracefully.
	StateLeft
)

// String returns "alive", "dead" or "left".
func (s MemberState) String() string {
	switch s {
	case StateAlive:
		return "alive"
	case StateDead:
		return "dead"
	case StateLeft:
		return "left"
	}
	return fmt.Sprintf("MemberState(%d)", int(s))
}

// Member is a node known to gossip, including dead and departed ones.
type Member struct {
	// Name is the node name.
	Name string
	// Addr is the node's gossip address, host:port.
	Addr string
	// State is the node's liveness.
	State MemberState
	// Meta is what the node last gossiped.
	Meta Meta
	// Since is when the local node saw State begin (for grace periods).
	Since time.Time
}

// Membership is this node's gossip member. Its methods are safe for
// concurrent use.
type Membership struct {
	cfg       Config
	log       *slog.Logger
	ml        *memberlist.Memberlist
	localAddr string
	lastMeta  atomic.Pointer[[]byte]

	leaving  atomic.Bool // set by Leave: gossiped as Meta.Leaving
	stopping atomic.Bool // set by Shutdown: gossip errors are expected now

	mu          sync.Mutex
	members     map[string]Member // every node ever seen; dead/left kept until it returns
	leaveIntent map[string]bool   // nodes that told us directly they are leaving
	gen         map[string]uint64 // bumped on every recorded change, per node

	evMu     sync.RWMutex
	evClosed bool
	events   chan Event
	resync   chan struct{}
	dropped  atomic.Uint64

	lifeMu       sync.Mutex // serialises Leave and Shutdown (memberlist panics on leave after shutdown)
	shutdownOnce sync.Once
}

// New starts gossip on cfg.BindAddr:cfg.BindPort. The node is alone until
// Join; its own Join event is the first on Events.
func New(cfg Config) (*Membership, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	meta := cfg.Meta()
	if meta.Name != "" && meta.Name != cfg.Name {
		return nil, fmt.Errorf("%w: Meta().Name %q differs from Name %q", ErrInvalidConfig, meta.Name, cfg.Name)
	}
	if _, err := EncodeMeta(meta); err != nil {
		return nil, fmt.Errorf("membership %s: %w", cfg.Name, err)
	}
	m := &Membership{
		cfg:         cfg,
		log:         cfg.Logger.With("component", "membership"),
		members:     make(map[string]Member),
		leaveIntent: make(map[string]bool),
		gen:         make(map[string]uint64),
		events:      make(chan Event, cfg.EventBuffer),
		resync:      make(chan struct{}, 1),
	}
	mc, err := cfg.memberlistConfig(&delegate{m: m})
	if err != nil {
		return nil, fmt.Errorf("membership %s: %w", cfg.Name, err)
	}
	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("membership %s: start gossip on %s:%d: %w", cfg.Name, cfg.BindAddr, cfg.BindPort, err)
	}
	m.ml = ml
	m.localAddr = ml.LocalNode().Address()
	m.log.Info("gossip started", "node", cfg.Name, "addr", m.localAddr)
	return m, nil
}

// Join contacts the given gossip addresses (host:port) and merges state with
// each. It returns how many were reached; it fails only if none was. A peer
// with another key refuses the exchange, so Join fails. If ctx ends first
// Join returns ctx's error; the attempt in flight ends within TCPTimeout.
func (m *Membership) Join(ctx context.Context, addrs []string) (int, error) {
	if len(addrs) == 0 {
		return 0, errors.New("join: no addresses")
	}
	if m.isShutdown() {
		return 0, fmt.Errorf("join: %w", ErrShutdown)
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("join %s: %w", strings.Join(addrs, ","), err)
	}
	type result struct {
		n   int
		err error
	}
	done := make(chan result, 1)
	go func() {
		n, err := m.ml.Join(addrs)
		done <- result{n, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			return r.n, fmt.Errorf("join %s: %w", strings.Join(addrs, ","), flatten(r.err))
		}
		m.log.Info("joined cluster", "contacted", r.n)
		return r.n, nil
	case <-ctx.Done():
		return 0, fmt.Errorf("join %s: %w", strings.Join(addrs, ","), ctx.Err())
	}
}

// Events returns the membership event stream, starting with the local
// node's own Join. It is closed by Shutdown.
// Events are never blocked on: when the buffer is full they are dropped,
// Dropped grows and NeedResync fires; the consumer should then reconcile
// from Resync (or Members).
func (m *Membership) Events() <-chan Event { return m.events }

// Dropped returns how many events were dropped because Events was full.
func (m *Membership) Dropped() uint64 { return m.dropped.Load() }

// NeedResync receives a value after events were dropped.
func (m *Membership) NeedResync() <-chan struct{} { return m.resync }

// Resync returns one synthetic event per known member describing its
// current state (Join for alive, Leave for left, Fail for dead), sorted by
// name, for a consumer that missed events.
func (m *Membership) Resync() []Event {
	members := m.Members()
	out := make([]Event, 0, len(members))
	for _, mb := range members {
		t := EventJoin
		switch mb.State {
		case StateDead:
			t = EventFail
		case StateLeft:
			t = EventLeave
		}
		out = append(out, Event{Type: t, Node: mb.Name, Meta: mb.Meta})
	}
	return out
}

// Members returns every node this one knows of, itself included, sorted by
// name. Dead and departed nodes stay listed (with State and Since) until
// they return.
func (m *Membership) Members() []Member {
	m.mu.Lock()
	out := slices.Collect(maps.Values(m.members))
	m.mu.Unlock()
	for i := range out {
		out[i].Meta = out[i].Meta.clone()
	}
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// UpdateMeta re-reads Config.Meta and gossips it (call it when free
// resources or labels change). It returns an error wrapping ErrMetaTooLarge,
// and gossips nothing, if the meta does not fit. It waits until the update
// has been sent to peers, or ctx ends; the update still spreads after a
// timeout.
func (m *Membership) UpdateMeta(ctx context.Context) error {
	if m.isShutdown() {
		return fmt.Errorf("update meta: %w", ErrShutdown)
	}
	if _, err := EncodeMeta(m.cfg.Meta()); err != nil {
		return fmt.Errorf("update meta: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("update meta: %w", err)
	}
	timeout := m.cfg.TCPTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	if timeout <= 0 {
		return fmt.Errorf("update meta: %w", context.DeadlineExceeded)
	}
	done := make(chan error, 1)
	go func() { done <- m.ml.UpdateNode(timeout) }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("update meta: %w", err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("update meta: %w", ctx.Err())
	}
}

// Leave departs gracefully, so that peers report Leave, never Fail. It
// gossips Meta.Leaving, tells every live peer directly, then broadcasts
// memberlist's leave, waiting up to timeout overall (zero or less means
// Config.TCPTimeout). Call Shutdown afterwards; a Shutdown issued meanwhile
// waits for Leave to finish.
func (m *Membership) Leave(timeout time.Duration) error {
	m.lifeMu.Lock()
	defer m.lifeMu.Unlock()
	if m.isShutdown() {
		return fmt.Errorf("leave: %w", ErrShutdown)
	}
	if timeout <= 0 {
		timeout = m.cfg.TCPTimeout
	}
	deadline := time.Now().Add(timeout)
	m.leaving.Store(true)
	if err := m.ml.UpdateNode(timeout / 2); err != nil {
		m.log.Warn("leave: leaving flag not fully gossiped", "err", err)
	}
	m.sendLeaveIntents(deadline)
	if err := m.ml.Leave(max(time.Until(deadline), time.Millisecond)); err != nil {
		return fmt.Errorf("leave: %w", err)
	}
	m.log.Info("left cluster", "node", m.cfg.Name)
	return nil
}

// sendLeaveIntents tells each live peer over TCP that this node is leaving,
// waiting at most until deadline.
func (m *Membership) sendLeaveIntents(deadline time.Time) {
	msg := append([]byte{msgLeaveIntent}, m.cfg.Name...)
	var wg sync.WaitGroup
	for _, p := range m.Members() {
		if p.Name == m.cfg.Name || p.State != StateAlive {
			continue
		}
		host, portStr, err := net.SplitHostPort(p.Addr)
		port, perr := strconv.ParseUint(portStr, 10, 16)
		if err != nil || perr != nil {
			continue
		}
		node := &memberlist.Node{Name: p.Name, Addr: net.ParseIP(host), Port: uint16(port)}
		wg.Go(func() {
			if err := m.ml.SendReliable(node, msg); err != nil {
				m.log.Warn("leave: intent not delivered", "node", node.Name, "err", err)
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Until(deadline) / 2):
	}
}

// Shutdown stops gossip and closes Events. Without a prior Leave, peers
// treat this node as failed. It is idempotent.
func (m *Membership) Shutdown() error {
	m.lifeMu.Lock()
	defer m.lifeMu.Unlock()
	var err error
	m.shutdownOnce.Do(func() {
		m.stopping.Store(true)
		if e := m.ml.Shutdown(); e != nil {
			err = fmt.Errorf("shutdown gossip: %w", e)
		}
		m.evMu.Lock()
		m.evClosed = true
		close(m.events)
		m.evMu.Unlock()
		m.log.Info("gossip stopped", "node", m.cfg.Name)
	})
	return err
}

// LocalAddr returns the address peers use to reach this node's gossip,
// host:port, with the real port when BindPort was 0.
func (m *Membership) LocalAddr() string { return m.localAddr }

// Name returns the local node name.
func (m *Membership) Name() string { return m.cfg.Name }

func (m *Membership) isShutdown() bool {
	m.evMu.RLock()
	defer m.evMu.RUnlock()
	return m.evClosed
}

// errList is a one-line form of memberlist's multierror: it keeps every
// error for errors.Is and joins the messages with "; ".
type errList []error

func (l errList) Error() string {
	msgs := make([]string, len(l))
	for i, e := range l {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "; ")
}

func (l errList) Unwrap() []error { return l }

// flatten turns a multi-line multierror into an errList.
func flatten(err error) error {
	var multi interface{ WrappedErrors() []error }
	if errors.As(err, &multi) {
		return errList(multi.WrappedErrors())
	}
	return err
}
