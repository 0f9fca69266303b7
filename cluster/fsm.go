package cluster

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
	"github.com/shoal-dev/shoal/scheduler"
)

// Errors an Apply can return; callers branch on them with errors.Is.
var (
	ErrNotFound = errors.New("not found")
	ErrExists   = errors.New("already exists")
	ErrInUse    = errors.New("in use")
	// ErrTokenInvalid is returned for a join token that is unknown, already
	// used, or expired.
	ErrTokenInvalid = errors.New("join token is unknown, used or expired")
	// ErrRevoked is returned for a certificate the trust store revoked.
	ErrRevoked = errors.New("certificate revoked")
	// ErrInvalidCommand is returned for a command missing what it needs.
	ErrInvalidCommand = errors.New("invalid command")
	// ErrStale is returned for a compare-and-set entry whose record changed
	// since the proposer read it: read again and retry.
	ErrStale = errors.New("changed since read")
)

// ImageAutoUpdate is the image property marking an image the leader keeps
// current with the image server it came from.
const ImageAutoUpdate = "source.auto_update"

// snapshotVersion is the FSMSnapshot format version this code writes.
const snapshotVersion = 1

// Change says which object an applied command touched.
type Change struct {
	// "container", "image", "alias", "pool", "network", "node", "token",
	// "trust" (Name: the fingerprint), "trust-revoked" (Name: the
	// fingerprints, comma-separated), "profile", "volume" (Name:
	// POOL/NAME), "resync" (a snapshot was restored).
	Kind string
	Name string
}

// state is the whole desired state. It is only mutated inside Apply/Restore.
type state struct {
	containers map[string]*shoalv1.Container
	images     map[string]*shoalv1.Image
	aliases    map[string]string
	pools      map[string]*shoalv1.StoragePool
	networks   map[string]*shoalv1.Network
	nodes      map[string]*shoalv1.Node
	identity   *shoalv1.ClusterIdentity
	tokens     map[string]*shoalv1.TokenAddCommand // by name
	config     map[string]string                   // cluster-wide keys
	trust      map[string]*shoalv1.TrustEntry      // by fingerprint
	profiles   map[string]*shoalv1.Profile
	volumes    map[string]*shoalv1.StorageVolume // by VolumeKey
	addrs      addresses                         // derived from containers
	// sched is the scheduler's view of containers and nodes, kept current
	// by track (schedview.go); nil until a reader needs it, or after a
	// command it cannot follow in place.
	sched *scheduler.Snapshot
}

func newState() *state {
	return &state{
		containers: map[string]*shoalv1.Container{},
		images:     map[string]*shoalv1.Image{},
		aliases:    map[string]string{},
		pools:      map[string]*shoalv1.StoragePool{},
		networks:   map[string]*shoalv1.Network{},
		nodes:      map[string]*shoalv1.Node{},
		tokens:     map[string]*shoalv1.TokenAddCommand{},
		config:     map[string]string{},
		trust:      map[string]*shoalv1.TrustEntry{},
		profiles:   map[string]*shoalv1.Profile{DefaultProfile: {Name: DefaultProfile, Description: "Default profile"}},
		volumes:    map[string]*shoalv1.StorageVolume{},
		addrs:      newAddresses(),
	}
}

// FSM applies commands to the desired state. Apply is deterministic: no clock,
// no randomness, no I/O.
type FSM struct {
	mu sync.RWMutex
	s  *state
	// applied is the Raft index of the last entry this FSM applied.
	// raft.AppliedIndex is set when entries are handed to the FSM, before
	// it applies them: a reader waiting for its own write must wait on
	// this instead.
	applied atomic.Uint64

	subMu sync.Mutex
	subs  []chan Change
}

// NewFSM returns an empty FSM.
func NewFSM() *FSM { return &FSM{s: newState()} }

var _ raft.FSM = (*FSM)(nil)

// Subscribe returns a channel that receives a Change after every applied
// command. Sends never block: a subscriber that falls behind misses changes
// and must resync (the reconciler does so periodically anyway).
func (f *FSM) Subscribe() <-chan Change {
	ch := make(chan Change, 4096)
	f.subMu.Lock()
	f.subs = append(f.subs, ch)
	f.subMu.Unlock()
	return ch
}

func (f *FSM) publish(c Change) {
	f.subMu.Lock()
	defer f.subMu.Unlock()
	for _, ch := range f.subs {
		select {
		case ch <- c:
		default:
		}
	}
}

// Apply applies one Raft log entry. It returns nil or an error describing a
// rule the command broke (name taken, missing object), or for a
// CommandBatch a BatchResult; a payload that does not decode is a bug and
// panics, so that no replica silently diverges.
func (f *FSM) Apply(l *raft.Log) interface{} {
	return f.ApplyBatch([]*raft.Log{l})[0]
}

// BatchResult is the FSM's answer to a CommandBatch entry: the verdict
// of each command, in order (nil or the error Apply would have returned
// for it alone).
type BatchResult []error

// ApplyBatch applies entries committed together (raft.BatchingFSM: up to
// MaxAppendEntries at once) under one lock, with the same verdict per
// entry as Apply; the changes are published once all are applied.
func (f *FSM) ApplyBatch(logs []*raft.Log) []interface{} {
	out := make([]interface{}, len(logs))
	msgs := make([]proto.Message, len(logs))
	for i, l := range logs {
		if l.Type != raft.LogCommand {
			continue
		}
		msgs[i] = mustDecode(l)
	}
	changes := make([]Change, 0, len(logs))
	f.mu.Lock()
	for i, m := range msgs {
		if m == nil {
			continue
		}
		batch, ok := m.(*shoalv1.CommandBatch)
		if !ok {
			change, err := f.s.apply(m)
			if err != nil {
				out[i] = err
				continue
			}
			changes = append(changes, change)
			continue
		}
		res := make(BatchResult, len(batch.GetCommands()))
		for k, data := range batch.GetCommands() {
			t, cmd, err := Decode(data)
			if err != nil || t == CmdBatch {
				f.mu.Unlock()
				panic(fmt.Sprintf("fsm: index %d: command %d of a batch: type %d: %v", logs[i].Index, k, t, err))
			}
			change, err := f.s.apply(cmd)
			if err != nil {
				res[k] = err
				continue
			}
			changes = append(changes, change)
		}
		out[i] = res
	}
	f.mu.Unlock()
	if len(logs) > 0 {
		f.applied.Store(logs[len(logs)-1].Index)
	}
	for _, c := range changes {
		f.publish(c)
	}
	return out
}

func mustDecode(l *raft.Log) proto.Message {
	_, m, err := Decode(l.Data)
	if err != nil {
		panic(fmt.Sprintf("fsm: index %d: %v", l.Index, err))
	}
	return m
}

var _ raft.BatchingFSM = (*FSM)(nil)

// apply applies one command and keeps the scheduler's view current.
func (s *state) apply(m proto.Message) (Change, error) {
	change, err := s.applyCommand(m)
	if err == nil {
		s.track(m)
	}
	return change, err
}

func (s *state) applyCommand(m proto.Message) (Change, error) {
	switch c := m.(type) {
	case *shoalv1.ContainerCreateCommand:
		ct := c.GetContainer()
		if _, ok := s.containers[ct.GetName()]; ok {
			return Change{}, fmt.Errorf("container %q: %w", ct.GetName(), ErrExists)
		}
		// The command was decoded from the entry for this Apply alone:
		// it becomes the record without a copy.
		rec := ct
		if err := checkProfiles(rec.GetName(), rec.GetProfiles()); err != nil {
			return Change{}, err
		}
		// Expanded here, never taken from the proposer.
		if err := s.expandContainer(rec); err != nil {
			return Change{}, err
		}
		entry, placed, err := s.checkPlacement(rec)
		if err != nil {
			return Change{}, err
		}
		if err := s.checkVolumes(rec); err != nil {
			return Change{}, err
		}
		if err := s.assignAddresses(rec); err != nil {
			return Change{}, err
		}
		s.containers[ct.GetName()] = rec
		s.index(rec)
		if placed {
			s.schedAddEntry(entry)
		}
		return Change{"container", ct.GetName()}, nil
	case *shoalv1.ContainerUpdateCommand:
		ct, err := s.container(c.GetName())
		if err != nil {
			return Change{}, err
		}
		if c.IfRevision != nil && c.GetIfRevision() != ct.GetRevision() {
			return Change{}, fmt.Errorf("container %q: revision %d, the update was computed on %d: %w", ct.GetName(), ct.GetRevision(), c.GetIfRevision(), ErrStale)
		}
		next := proto.Clone(ct).(*shoalv1.Container)
		if !c.GetKeepConfig() {
			next.Config = cloneMap(c.GetConfig())
		}
		if len(c.GetSetConfig()) > 0 || len(c.GetUnsetConfig()) > 0 {
			if next.Config == nil {
				next.Config = map[string]string{}
			}
			for k, v := range c.GetSetConfig() {
				next.Config[k] = v
			}
			for _, k := range c.GetUnsetConfig() {
				delete(next.Config, k)
			}
		}
		if c.GetSetProfiles() {
			if err := checkProfiles(ct.GetName(), c.GetProfiles()); err != nil {
				return Change{}, err
			}
			next.Profiles = slices.Clone(c.GetProfiles())
		}
		if c.GetSetDevices() {
			next.Devices = map[string]*shoalv1.Device{}
			for k, d := range c.GetDevices() {
				next.Devices[k] = proto.Clone(d).(*shoalv1.Device)
			}
		}
		if err := s.expandContainer(next); err != nil {
			return Change{}, err
		}
		if err := s.checkVolumes(next); err != nil {
			return Change{}, err
		}
		ct.Config, ct.Profiles, ct.Devices = next.Config, next.Profiles, next.Devices
		ct.ExpandedConfig, ct.ExpandedDevices = next.ExpandedConfig, next.ExpandedDevices
		ct.Revision++
		return Change{"container", c.GetName()}, nil
	case *shoalv1.ProfileCreateCommand, *shoalv1.ProfileUpdateCommand, *shoalv1.ProfileRenameCommand, *shoalv1.ProfileDeleteCommand:
		return s.applyProfile(m)
	case *shoalv1.VolumeCreateCommand, *shoalv1.VolumeUpdateCommand, *shoalv1.VolumeDeleteCommand, *shoalv1.VolumeRenameCommand,
		*shoalv1.VolumeMoveCommand, *shoalv1.VolumeSnapshotCreateCommand, *shoalv1.VolumeSnapshotDeleteCommand:
		return s.applyVolume(m)
	case *shoalv1.ContainerRenameCommand, *shoalv1.SnapshotRenameCommand:
		return s.applyRename(m)
	case *shoalv1.ContainerDesiredStateCommand:
		ct, err := s.container(c.GetName())
		if err != nil {
			return Change{}, err
		}
		ct.DesiredState = c.GetDesiredState()
		return Change{"container", c.GetName()}, nil
	case *shoalv1.ContainerDeleteCommand:
		ct, err := s.container(c.GetName())
		if err != nil {
			return Change{}, err
		}
		s.release(ct)
		delete(s.containers, c.GetName())
		return Change{"container", c.GetName()}, nil
	case *shoalv1.ContainerNicAddCommand:
		ct, err := s.container(c.GetContainer())
		if err != nil {
			return Change{}, err
		}
		nic := proto.Clone(c.GetNic()).(*shoalv1.NIC)
		for _, have := range ct.GetNics() {
			if have.GetName() == nic.GetName() {
				return Change{}, fmt.Errorf("container %q: nic %s: %w", ct.GetName(), nic.GetName(), ErrExists)
			}
		}
		if len(ct.GetNics()) == 0 {
			return Change{}, fmt.Errorf("container %q was recorded before NICs were: recreate it to add one: %w", ct.GetName(), ErrInvalidCommand)
		}
		if err := checkNames(ct.GetName(), append(slices.Clip(ct.GetNics()), nic)); err != nil {
			return Change{}, err
		}
		// The other NICs' addresses are already in the index: only the
		// new one is checked and allocated.
		one := &shoalv1.Container{Name: ct.GetName(), Nics: []*shoalv1.NIC{nic}}
		if err := s.assignAddresses(one); err != nil {
			return Change{}, err
		}
		ct.Nics = append(ct.Nics, nic)
		s.index(one)
		return Change{"container", ct.GetName()}, nil
	case *shoalv1.ContainerReplicaSetCommand:
		ct, err := s.container(c.GetContainer())
		if err != nil {
			return Change{}, err
		}
		r := c.GetReplica()
		if r.GetMember() == "" || r.GetSnapshot() == "" {
			return Change{}, fmt.Errorf("container %q: a replica needs a member and a snapshot: %w", ct.GetName(), ErrInvalidCommand)
		}
		if r.GetMember() == ct.GetNode() {
			return Change{}, fmt.Errorf("container %q: its owner %s cannot hold its replica: %w", ct.GetName(), r.GetMember(), ErrInvalidCommand)
		}
		if _, ok := s.nodes[r.GetMember()]; !ok {
			return Change{}, fmt.Errorf("container %q: replica member %q: %w", ct.GetName(), r.GetMember(), ErrNotFound)
		}
		if r.GetFrom() != ct.GetNode() {
			// Sent by a member that no longer owns it (a move or a heal
			// came first): stale, and refused.
			return Change{}, fmt.Errorf("container %q: a replica from %s, but %s owns it: %w", ct.GetName(), r.GetFrom(), ct.GetNode(), ErrInUse)
		}
		r = proto.Clone(r).(*shoalv1.Replica)
		ct.Replicas = slices.DeleteFunc(ct.Replicas, func(x *shoalv1.Replica) bool { return x.GetMember() == r.GetMember() })
		ct.Replicas = append(ct.Replicas, r)
		slices.SortFunc(ct.Replicas, func(a, b *shoalv1.Replica) int { return strings.Compare(a.GetMember(), b.GetMember()) })
		return Change{"container", ct.GetName()}, nil
	case *shoalv1.ContainerHealCommand:
		ct, err := s.container(c.GetName())
		if err != nil {
			return Change{}, err
		}
		if ct.GetNode() != c.GetFrom() {
			return Change{}, fmt.Errorf("container %q is owned by %q, not %q: %w", c.GetName(), ct.GetNode(), c.GetFrom(), ErrInUse)
		}
		if n, ok := s.nodes[c.GetFrom()]; !ok || n.GetStatus() != StatusOffline {
			// A member that stopped cleanly, or is back, is never healed.
			return Change{}, fmt.Errorf("container %q: its member %s is not offline: %w", c.GetName(), c.GetFrom(), ErrInvalidCommand)
		}
		if n, ok := s.nodes[c.GetNode()]; !ok || n.GetStatus() != StatusOnline {
			return Change{}, fmt.Errorf("container %q: member %s is not online: %w", c.GetName(), c.GetNode(), ErrInvalidCommand)
		}
		i := slices.IndexFunc(ct.GetReplicas(), func(r *shoalv1.Replica) bool { return r.GetMember() == c.GetNode() })
		if i < 0 {
			return Change{}, fmt.Errorf("container %q: member %s holds no replica of it: %w", c.GetName(), c.GetNode(), ErrInvalidCommand)
		}
		ct.Replicas = healedReplicas(ct.GetReplicas(), i, c.GetFrom(), c.GetNode())
		// The custom volumes it attaches were replicated with it: their
		// replicas there become the volumes.
		for _, k := range VolumeDevices(ct.GetExpandedDevices()) {
			if v, ok := s.volumes[k]; ok && v.GetNode() == c.GetFrom() {
				v.Node = c.GetNode()
			}
		}
		ct.Node, ct.Status, ct.StatusMessage = c.GetNode(), "", ""
		ct.Generation++
		return Change{"container", ct.GetName()}, nil
	case *shoalv1.ContainerReplaceCommand:
		ct, err := s.container(c.GetName())
		if err != nil {
			return Change{}, err
		}
		if ct.GetNode() != c.GetFrom() {
			return Change{}, fmt.Errorf("container %q is placed on %q, not %q: %w", c.GetName(), ct.GetNode(), c.GetFrom(), ErrInUse)
		}
		if st := ct.GetStatus(); st != "" && st != "Pulling" {
			// Its owner reported it: it exists there, and only a heal or a
			// move may take it elsewhere.
			return Change{}, fmt.Errorf("container %q already came up on %s (%s): %w", c.GetName(), c.GetFrom(), st, ErrInUse)
		}
		if len(VolumeDevices(ct.GetExpandedDevices())) > 0 {
			return Change{}, fmt.Errorf("container %q attaches storage volumes on %s: it cannot be placed elsewhere: %w", c.GetName(), c.GetFrom(), ErrInUse)
		}
		if n, ok := s.nodes[c.GetTo()]; !ok || n.GetStatus() != StatusOnline {
			return Change{}, fmt.Errorf("container %q: member %s is not online: %w", c.GetName(), c.GetTo(), ErrInvalidCommand)
		}
		if err := s.fitsHere(ct, c.GetTo()); err != nil {
			return Change{}, err
		}
		ct.Node, ct.Status, ct.StatusMessage = c.GetTo(), "", ""
		ct.Generation++
		return Change{"container", ct.GetName()}, nil
	case *shoalv1.ContainerReplicaDropCommand:
		ct, err := s.container(c.GetContainer())
		if err != nil {
			return Change{}, err
		}
		ct.Replicas = slices.DeleteFunc(ct.Replicas, func(x *shoalv1.Replica) bool { return x.GetMember() == c.GetMember() })
		return Change{"container", ct.GetName()}, nil
	case *shoalv1.ContainerNicRemoveCommand:
		ct, err := s.container(c.GetContainer())
		if err != nil {
			return Change{}, err
		}
		if c.GetName() == "eth0" {
			return Change{}, fmt.Errorf("container %q: eth0 cannot be removed: %w", ct.GetName(), ErrInvalidCommand)
		}
		for i, nic := range ct.GetNics() {
			if nic.GetName() == c.GetName() {
				s.release(&shoalv1.Container{Nics: []*shoalv1.NIC{nic}})
				ct.Nics = append(ct.Nics[:i:i], ct.Nics[i+1:]...)
				return Change{"container", ct.GetName()}, nil
			}
		}
		return Change{}, fmt.Errorf("container %q: nic %s: %w", ct.GetName(), c.GetName(), ErrNotFound)
	case *shoalv1.ContainerMoveCommand:
		ct, err := s.container(c.GetName())
		if err != nil {
			return Change{}, err
		}
		if ct.GetNode() != c.GetFrom() {
			return Change{}, fmt.Errorf("container %q is owned by %q, not %q: %w", c.GetName(), ct.GetNode(), c.GetFrom(), ErrInUse)
		}
		moved := proto.Clone(ct).(*shoalv1.Container)
		moved.Node = c.GetNode()
		if _, ok := s.nodes[c.GetNode()]; !ok {
			return Change{}, fmt.Errorf("node %q: %w", c.GetNode(), ErrNotFound)
		}
		if _, _, err := s.checkPlacement(moved); err != nil {
			return Change{}, err
		}
		if err := s.moveVolumes(ct, c.GetVolumes(), c.GetFrom(), c.GetNode()); err != nil {
			return Change{}, err
		}
		ct.Node, ct.DesiredState, ct.Status, ct.StatusMessage = c.GetNode(), c.GetDesiredState(), "", ""
		// The move carried the snapshot the replicas are based on: the new
		// owner goes on from it (or, if the increment fails, sends in full).
		// A replica on the new owner itself is no longer one.
		ct.Replicas = slices.DeleteFunc(ct.Replicas, func(r *shoalv1.Replica) bool { return r.GetMember() == c.GetNode() })
		for _, r := range ct.Replicas {
			r.From = c.GetNode()
		}
		return Change{"container", c.GetName()}, nil
	case *shoalv1.ContainerStatusCommand:
		ct, err := s.container(c.GetName())
		if err != nil {
			return Change{}, err
		}
		if ct.GetNode() != c.GetNode() {
			return Change{}, fmt.Errorf("container %q is owned by %q, not %q", c.GetName(), ct.GetNode(), c.GetNode())
		}
		ct.Status, ct.StatusMessage = c.GetStatus(), c.GetMessage()
		return Change{"container-status", c.GetName()}, nil
	case *shoalv1.SnapshotCreateCommand:
		ct, err := s.container(c.GetContainer())
		if err != nil {
			return Change{}, err
		}
		for _, sn := range ct.Snapshots {
			if sn.GetName() == c.GetSnapshot().GetName() {
				return Change{}, fmt.Errorf("snapshot %q of %q: %w", sn.GetName(), ct.GetName(), ErrExists)
			}
		}
		ct.Snapshots = append(ct.Snapshots, proto.Clone(c.GetSnapshot()).(*shoalv1.Snapshot))
		return Change{"container", c.GetContainer()}, nil
	case *shoalv1.SnapshotDeleteCommand:
		ct, err := s.container(c.GetContainer())
		if err != nil {
			return Change{}, err
		}
		for i, sn := range ct.Snapshots {
			if sn.GetName() == c.GetName() {
				ct.Snapshots = append(ct.Snapshots[:i], ct.Snapshots[i+1:]...)
				return Change{"container", c.GetContainer()}, nil
			}
		}
		return Change{}, fmt.Errorf("snapshot %q of %q: %w", c.GetName(), c.GetContainer(), ErrNotFound)
	case *shoalv1.ImageAddCommand:
		img := c.GetImage()
		if old, ok := s.images[img.GetFingerprint()]; ok {
			old.Nodes = mergeSorted(old.Nodes, img.GetNodes())
			// A pull with auto-update of an image pulled before without.
			if img.GetProperties()[ImageAutoUpdate] == "true" && old.GetProperties()[ImageAutoUpdate] != "true" {
				if old.Properties == nil {
					old.Properties = map[string]string{}
				}
				old.Properties[ImageAutoUpdate] = "true"
			}
			return Change{"image", img.GetFingerprint()}, nil
		}
		n := proto.Clone(img).(*shoalv1.Image)
		n.Aliases = nil
		s.images[img.GetFingerprint()] = n
		return Change{"image", img.GetFingerprint()}, nil
	case *shoalv1.ImageDeleteCommand:
		fp := c.GetFingerprint()
		if _, ok := s.images[fp]; !ok {
			return Change{}, fmt.Errorf("image %q: %w", fp, ErrNotFound)
		}
		delete(s.images, fp)
		for a, t := range s.aliases {
			if t == fp {
				delete(s.aliases, a)
			}
		}
		return Change{"image", fp}, nil
	case *shoalv1.AliasSetCommand:
		if _, ok := s.images[c.GetFingerprint()]; !ok {
			return Change{}, fmt.Errorf("image %q: %w", c.GetFingerprint(), ErrNotFound)
		}
		s.aliases[c.GetAlias()] = c.GetFingerprint()
		return Change{"alias", c.GetAlias()}, nil
	case *shoalv1.AliasDeleteCommand:
		if _, ok := s.aliases[c.GetAlias()]; !ok {
			return Change{}, fmt.Errorf("alias %q: %w", c.GetAlias(), ErrNotFound)
		}
		delete(s.aliases, c.GetAlias())
		return Change{"alias", c.GetAlias()}, nil
	case *shoalv1.PoolCreateCommand:
		p := c.GetPool()
		if _, ok := s.pools[p.GetName()]; ok {
			return Change{}, fmt.Errorf("storage pool %q: %w", p.GetName(), ErrExists)
		}
		s.pools[p.GetName()] = proto.Clone(p).(*shoalv1.StoragePool)
		return Change{"pool", p.GetName()}, nil
	case *shoalv1.NetworkCreateCommand:
		n := c.GetNetwork()
		if _, ok := s.networks[n.GetName()]; ok {
			return Change{}, fmt.Errorf("network %q: %w", n.GetName(), ErrExists)
		}
		if err := s.checkNetwork(n); err != nil {
			return Change{}, err
		}
		s.networks[n.GetName()] = proto.Clone(n).(*shoalv1.Network)
		return Change{"network", n.GetName()}, nil
	case *shoalv1.NetworkDeleteCommand:
		if _, ok := s.networks[c.GetName()]; !ok {
			return Change{}, fmt.Errorf("network %q: %w", c.GetName(), ErrNotFound)
		}
		if s.config[DefaultNetworkKey] == c.GetName() {
			return Change{}, fmt.Errorf("network %q is the cluster's default network (%s): set another first: %w", c.GetName(), DefaultNetworkKey, ErrInUse)
		}
		if users := s.networkUsers(c.GetName()); len(users) > 0 {
			return Change{}, fmt.Errorf("network %q is used by %s: %w", c.GetName(), strings.Join(users, ", "), ErrInUse)
		}
		delete(s.networks, c.GetName())
		s.addrs.drop(c.GetName())
		return Change{"network", c.GetName()}, nil
	case *shoalv1.NodeUpsertCommand:
		n := proto.Clone(c.GetNode()).(*shoalv1.Node)
		old, ok := s.nodes[n.GetName()]
		if ok && c.GetKeepEvacuated() && old.GetStatus() == StatusEvacuated {
			n.Status = StatusEvacuated
		}
		s.nodes[n.GetName()] = n
		s.schedNode(old, n)
		return Change{"node", c.GetNode().GetName()}, nil
	case *shoalv1.NodeRemoveCommand:
		if _, ok := s.nodes[c.GetName()]; !ok {
			return Change{}, fmt.Errorf("node %q: %w", c.GetName(), ErrNotFound)
		}
		delete(s.nodes, c.GetName())
		return Change{"node", c.GetName()}, nil
	case *shoalv1.ClusterConfigCommand:
		for k, v := range c.GetSet() {
			if v == "" {
				delete(s.config, k)
			} else {
				s.config[k] = v
			}
		}
		return Change{"cluster-config", ""}, nil
	case *shoalv1.ClusterInitCommand:
		if s.identity != nil {
			return Change{}, fmt.Errorf("cluster identity: %w", ErrExists)
		}
		s.identity = &shoalv1.ClusterIdentity{Name: c.GetName(), CaCertPem: c.GetCaCertPem(), CaKeyPem: c.GetCaKeyPem(), GossipKey: c.GetGossipKey()}
		return Change{"identity", c.GetName()}, nil
	case *shoalv1.TokenAddCommand:
		// A new token for the same name replaces the old one.
		s.tokens[c.GetName()] = proto.Clone(c).(*shoalv1.TokenAddCommand)
		return Change{"token", c.GetName()}, nil
	case *shoalv1.TokenRedeemCommand:
		t, ok := s.tokens[c.GetName()]
		if !ok || t.GetSecretHash() != c.GetSecretHash() || c.GetNowUnix() >= t.GetExpiresUnix() {
			return Change{}, fmt.Errorf("token for %q: %w", c.GetName(), ErrTokenInvalid)
		}
		delete(s.tokens, c.GetName())
		return Change{"token", c.GetName()}, nil
	case *shoalv1.TokenRevokeCommand:
		if _, ok := s.tokens[c.GetName()]; !ok {
			return Change{}, fmt.Errorf("join token for %q: %w", c.GetName(), ErrNotFound)
		}
		delete(s.tokens, c.GetName())
		return Change{"token", c.GetName()}, nil
	case *shoalv1.TrustAddCommand:
		e := c.GetEntry()
		if e.GetFingerprint() == "" || e.GetName() == "" {
			return Change{}, fmt.Errorf("trust entry without fingerprint or name: %w", ErrInvalidCommand)
		}
		if old, ok := s.trust[e.GetFingerprint()]; ok && old.GetRevoked() {
			return Change{}, fmt.Errorf("certificate %s of %q was revoked: %w", e.GetFingerprint(), e.GetName(), ErrRevoked)
		}
		if sup := c.GetSupersedes(); sup != "" {
			old, ok := s.trust[sup]
			if !ok || old.GetRevoked() {
				return Change{}, fmt.Errorf("renew: certificate %s: %w", sup, ErrRevoked)
			}
			s.trust[sup] = revokedEntry(old, c.GetNowUnix())
		}
		s.trust[e.GetFingerprint()] = proto.Clone(e).(*shoalv1.TrustEntry)
		return Change{"trust", e.GetFingerprint()}, nil
	case *shoalv1.TrustRevokeCommand:
		for _, fp := range c.GetFingerprints() {
			if _, ok := s.trust[fp]; !ok {
				return Change{}, fmt.Errorf("certificate %s: %w", fp, ErrNotFound)
			}
		}
		for _, fp := range c.GetFingerprints() {
			if e := s.trust[fp]; !e.GetRevoked() {
				s.trust[fp] = revokedEntry(e, c.GetNowUnix())
			}
		}
		return Change{"trust-revoked", strings.Join(c.GetFingerprints(), ",")}, nil
	}
	panic(fmt.Sprintf("fsm: no apply for %T", m))
}

// revokedEntry is a revoked copy of e: entries are never changed in place,
// so readers may hold them without a lock.
func revokedEntry(e *shoalv1.TrustEntry, now int64) *shoalv1.TrustEntry {
	n := proto.Clone(e).(*shoalv1.TrustEntry)
	n.Revoked, n.RevokedUnix = true, now
	return n
}

func (s *state) container(name string) (*shoalv1.Container, error) {
	ct, ok := s.containers[name]
	if !ok {
		return nil, fmt.Errorf("container %q: %w", name, ErrNotFound)
	}
	return ct, nil
}

func cloneMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func mergeSorted(a, b []string) []string {
	set := map[string]bool{}
	for _, x := range append(append([]string{}, a...), b...) {
		set[x] = true
	}
	out := make([]string, 0, len(set))
	for x := range set {
		out = append(out, x)
	}
	sort.Strings(out)
	return out
}

// Snapshot captures an immutable copy of the state for Raft to persist.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	snap := f.s.export()
	snap.AppliedIndex = f.applied.Load()
	return &fsmSnapshot{snap: snap}, nil
}

// Applied is the Raft index of the last entry the FSM applied: its state
// holds every command up to there.
func (f *FSM) Applied() uint64 { return f.applied.Load() }

func (s *state) export() *shoalv1.FSMSnapshot {
	out := &shoalv1.FSMSnapshot{Version: snapshotVersion, Aliases: cloneMap(s.aliases), ClusterConfig: cloneMap(s.config)}
	for _, k := range sortedKeys(s.containers) {
		out.Containers = append(out.Containers, proto.Clone(s.containers[k]).(*shoalv1.Container))
	}
	for _, k := range sortedKeys(s.images) {
		out.Images = append(out.Images, proto.Clone(s.images[k]).(*shoalv1.Image))
	}
	for _, k := range sortedKeys(s.pools) {
		out.Pools = append(out.Pools, proto.Clone(s.pools[k]).(*shoalv1.StoragePool))
	}
	for _, k := range sortedKeys(s.networks) {
		out.Networks = append(out.Networks, proto.Clone(s.networks[k]).(*shoalv1.Network))
	}
	for _, k := range sortedKeys(s.nodes) {
		out.Nodes = append(out.Nodes, proto.Clone(s.nodes[k]).(*shoalv1.Node))
	}
	if s.identity != nil {
		out.Identity = proto.Clone(s.identity).(*shoalv1.ClusterIdentity)
	}
	for _, k := range sortedKeys(s.tokens) {
		out.Tokens = append(out.Tokens, proto.Clone(s.tokens[k]).(*shoalv1.TokenAddCommand))
	}
	for _, k := range sortedKeys(s.trust) {
		out.Trust = append(out.Trust, proto.Clone(s.trust[k]).(*shoalv1.TrustEntry))
	}
	for _, k := range sortedKeys(s.profiles) {
		out.Profiles = append(out.Profiles, proto.Clone(s.profiles[k]).(*shoalv1.Profile))
	}
	for _, k := range sortedKeys(s.volumes) {
		out.Volumes = append(out.Volumes, proto.Clone(s.volumes[k]).(*shoalv1.StorageVolume))
	}
	return out
}

// Restore replaces the state with a persisted snapshot.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return fmt.Errorf("restore snapshot: %w", err)
	}
	var snap shoalv1.FSMSnapshot
	if err := proto.Unmarshal(b, &snap); err != nil {
		return fmt.Errorf("restore snapshot: %w", err)
	}
	if snap.GetVersion() != snapshotVersion {
		return fmt.Errorf("restore snapshot: unsupported version %d", snap.GetVersion())
	}
	s := newState()
	for _, c := range snap.GetContainers() {
		s.containers[c.GetName()] = c
	}
	for _, i := range snap.GetImages() {
		s.images[i.GetFingerprint()] = i
	}
	for a, fp := range snap.GetAliases() {
		s.aliases[a] = fp
	}
	for _, p := range snap.GetPools() {
		s.pools[p.GetName()] = p
	}
	for _, n := range snap.GetNetworks() {
		s.networks[n.GetName()] = n
	}
	for _, name := range sortedKeys(s.containers) {
		s.index(s.containers[name]) // needs the networks' subnets
	}
	for _, n := range snap.GetNodes() {
		s.nodes[n.GetName()] = n
	}
	s.identity = snap.GetIdentity()
	for k, v := range snap.GetClusterConfig() {
		s.config[k] = v
	}
	for _, t := range snap.GetTokens() {
		s.tokens[t.GetName()] = t
	}
	for _, e := range snap.GetTrust() {
		s.trust[e.GetFingerprint()] = e
	}
	// A snapshot from before profiles has none: the default stays.
	for _, p := range snap.GetProfiles() {
		s.profiles[p.GetName()] = p
	}
	for _, v := range snap.GetVolumes() {
		s.volumes[VolumeKey(v.GetPool(), v.GetName())] = v
	}
	for _, name := range sortedKeys(s.containers) {
		if err := s.expandContainer(s.containers[name]); err != nil {
			return fmt.Errorf("restore snapshot: %w", err)
		}
	}
	f.mu.Lock()
	f.s = s
	f.applied.Store(snap.GetAppliedIndex())
	f.mu.Unlock()
	f.publish(Change{Kind: "resync"})
	return nil
}

type fsmSnapshot struct{ snap *shoalv1.FSMSnapshot }

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(s.snap)
	if err == nil {
		_, err = sink.Write(b)
	}
	if err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("persist snapshot: %w", err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// healedReplicas is a healed container's replica records. The new owner
// promotes its replica, snapshot and all, so it holds the snapshot that
// replica was at: the other members' replicas stay, now from the new owner
// (an increment goes on from a snapshot both hold; the owner sends in full
// where it lacks theirs), and the old owner, whose stale copy still has
// that snapshot, is recorded as holding it, so that it comes back a
// replica that an increment brings up to date.
func healedReplicas(reps []*shoalv1.Replica, promoted int, oldOwner, newOwner string) []*shoalv1.Replica {
	p := reps[promoted]
	out := []*shoalv1.Replica{{Member: oldOwner, Snapshot: p.GetSnapshot(), TakenUnixNano: p.GetTakenUnixNano(), From: newOwner}}
	for i, r := range reps {
		if i == promoted || r.GetMember() == oldOwner {
			continue
		}
		r = proto.Clone(r).(*shoalv1.Replica)
		r.From = newOwner
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b *shoalv1.Replica) int { return strings.Compare(a.GetMember(), b.GetMember()) })
	return out
}
