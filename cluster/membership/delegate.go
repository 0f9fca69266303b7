package membership

import (
	"bytes"
	"context"
	"log/slog"
	"time"

	"github.com/hashicorp/memberlist"
)

// delegate implements memberlist's Delegate, EventDelegate and
// ConflictDelegate. memberlist calls these with its node lock held: each
// records the fact, queues an event without blocking, and returns.
type delegate struct{ m *Membership }

var (
	_ memberlist.Delegate         = (*delegate)(nil)
	_ memberlist.EventDelegate    = (*delegate)(nil)
	_ memberlist.ConflictDelegate = (*delegate)(nil)
)

// NodeMeta returns the local node's encoded meta. If the current Meta does
// not encode within limit it logs and gossips the last good encoding
// (memberlist panics on oversize meta).
func (d *delegate) NodeMeta(limit int) []byte {
	m := d.m
	meta := m.cfg.Meta()
	meta.Leaving = m.leaving.Load()
	b, err := EncodeMeta(meta)
	if err == nil && len(b) > limit {
		err = ErrMetaTooLarge
	}
	if err != nil {
		m.log.Error("local meta not gossiped, keeping last good meta", "err", err)
		if last := m.lastMeta.Load(); last != nil {
			return *last
		}
		return nil
	}
	m.lastMeta.Store(&b)
	return b
}

// msgLeaveIntent prefixes the user message a leaving node sends each peer
// directly ("I am leaving"), followed by its name.
const msgLeaveIntent byte = 1

// NotifyMsg records leave intents; other user messages are ignored.
func (d *delegate) NotifyMsg(b []byte) {
	if len(b) < 2 || b[0] != msgLeaveIntent {
		return
	}
	name := string(b[1:])
	d.m.mu.Lock()
	d.m.leaveIntent[name] = true
	d.m.mu.Unlock()
	d.m.log.Debug("leave intent received", "node", name)
}

// GetBroadcasts returns no user broadcasts.
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }

// LocalState adds nothing to push/pull: all state is in node meta.
func (d *delegate) LocalState(join bool) []byte { return nil }

// MergeRemoteState ignores remote user state (there is none).
func (d *delegate) MergeRemoteState(buf []byte, join bool) {}

// NotifyJoin records a node that joined (or came back) and queues Join.
func (d *delegate) NotifyJoin(n *memberlist.Node) {
	d.m.observe(EventJoin, viewOf(n), StateAlive)
}

// NotifyUpdate records a node's new meta and queues Update.
func (d *delegate) NotifyUpdate(n *memberlist.Node) {
	d.m.observe(EventUpdate, viewOf(n), StateAlive)
}

// NotifyLeave queues Leave for a node that announced its departure and Fail
// for one declared dead. memberlist v0.7.0 does not say which (the Node it
// passes always has State alive: nodeState.State shadows Node.State), so
// Leave announces itself twice first: the Leaving meta flag, gossiped
// before memberlist's leave message, and a leave intent sent to each peer
// over TCP. The intent can lose a race with the UDP leave message, so a
// departure without a known announcement is judged one GossipInterval
// later: Fail, unless an intent arrived meanwhile.
func (d *delegate) NotifyLeave(n *memberlist.Node) {
	m, v := d.m, viewOf(n)
	meta, _ := DecodeMeta(v.name, v.meta)
	m.mu.Lock()
	if meta.Leaving || m.leaveIntent[v.name] || m.members[v.name].Meta.Leaving ||
		(v.name == m.cfg.Name && m.leaving.Load()) {
		m.recordLocked(EventLeave, v, StateLeft)
		m.mu.Unlock()
		return
	}
	gen := m.gen[v.name]
	m.mu.Unlock()
	time.AfterFunc(m.cfg.GossipInterval, func() { m.judgeDeparture(v, gen) })
}

// judgeDeparture reports a departure as Leave or Fail, unless the node
// changed state since (gen moved on).
func (m *Membership) judgeDeparture(v nodeView, gen uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.gen[v.name] != gen {
		return
	}
	if m.leaveIntent[v.name] {
		m.recordLocked(EventLeave, v, StateLeft)
		return
	}
	m.recordLocked(EventFail, v, StateDead)
}

// NotifyConflict logs two nodes claiming one name; memberlist keeps the
// existing one.
func (d *delegate) NotifyConflict(existing, other *memberlist.Node) {
	d.m.log.Error("node name conflict: keeping the existing node",
		"node", existing.Name, "existing", existing.Address(), "other", other.Address())
}

// nodeView is what this package keeps of a memberlist.Node, copied inside
// the callback (memberlist owns and mutates the Node).
type nodeView struct {
	name, addr string
	meta       []byte
}

func viewOf(n *memberlist.Node) nodeView {
	return nodeView{name: n.Name, addr: n.Address(), meta: bytes.Clone(n.Meta)}
}

// observe records a node's new state and queues an event.
func (m *Membership) observe(t EventType, v nodeView, s MemberState) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.recordLocked(t, v, s)
}

// recordLocked updates the member table and queues the event while m.mu is
// held, so events leave in the order they were recorded. It runs inside
// memberlist callbacks: no I/O but logging, no blocking.
func (m *Membership) recordLocked(t EventType, v nodeView, s MemberState) {
	meta, err := DecodeMeta(v.name, v.meta)
	if err != nil {
		m.log.Warn("ignoring undecodable meta", "node", v.name, "err", err)
	}
	member := Member{Name: v.name, Addr: v.addr, State: s, Meta: meta, Since: time.Now()}
	if prev, ok := m.members[v.name]; ok && prev.State == s {
		member.Since = prev.Since
	}
	if t == EventJoin {
		delete(m.leaveIntent, v.name) // it is back
	}
	m.members[v.name] = member
	m.gen[v.name]++

	level := slog.LevelInfo
	switch t {
	case EventUpdate:
		level = slog.LevelDebug
	case EventFail:
		level = slog.LevelWarn
	}
	m.log.Log(context.Background(), level, "member "+t.String(), "node", v.name, "addr", v.addr)
	m.emit(Event{Type: t, Node: v.name, Meta: meta.clone()})
}

// emit queues e without blocking. When the channel is full the event is
// dropped, counted, and NeedResync is signalled.
func (m *Membership) emit(e Event) {
	m.evMu.RLock()
	defer m.evMu.RUnlock()
	if m.evClosed {
		return
	}
	select {
	case m.events <- e:
	default:
		m.dropped.Add(1)
		select {
		case m.resync <- struct{}{}:
		default:
		}
	}
}
