package api

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/shoal-dev/shoal/api/operations"
	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/cluster/ha"
	"github.com/shoal-dev/shoal/internal/config"
	"github.com/shoal-dev/shoal/migration"
	"github.com/shoal-dev/shoal/network"
	"github.com/shoal-dev/shoal/node"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
	"github.com/shoal-dev/shoal/scheduler"
	"github.com/shoal-dev/shoal/storage"
)

// container fetches a container record or returns NotFound. A miss is
// confirmed against the leader first: a container just created through
// another member is found here too.
func (s *Server) container(name string) (*shoalv1.Container, error) {
	if name == "" {
		return nil, invalid("name", "a container name is required")
	}
	ct, err := s.fsm.Container(name)
	if errors.Is(err, cluster.ErrNotFound) && s.cl.Sync(context.Background()) == nil {
		ct, err = s.fsm.Container(name)
	}
	if err != nil {
		return nil, toStatus(err)
	}
	return ct, nil
}

// resolveImage finds an image, confirming a miss against the leader.
func (s *Server) resolveImage(ctx context.Context, ref string) (*shoalv1.Image, error) {
	img, err := s.fsm.ResolveImage(ref)
	if errors.Is(err, cluster.ErrNotFound) && s.cl.Sync(ctx) == nil {
		img, err = s.fsm.ResolveImage(ref)
	}
	if err != nil {
		return nil, toStatus(fmt.Errorf("image: %w", err))
	}
	return img, nil
}

// info joins a container's record with what its host observes.
func (s *Server) info(ctx context.Context, ct *shoalv1.Container, detail bool) *shoalv1.ContainerInfo {
	out := &shoalv1.ContainerInfo{Container: ct}
	if ct.GetNode() == s.node.Name() {
		out.State = s.node.State(ctx, ct, detail)
		if detail {
			out.State.DiskBytes = s.node.DiskUsage(ctx, ct)
		}
	} else {
		out.State = &shoalv1.ContainerState{Status: ct.GetStatus()}
	}
	return out
}

// CreateContainer validates, records the container through Raft, and starts
// an operation that makes it real on this node.
func (s *Server) CreateContainer(ctx context.Context, req *shoalv1.CreateContainerRequest) (*shoalv1.CreateContainerResponse, error) {
	if err := config.ValidateName("name", req.GetName()); err != nil {
		return nil, toStatus(err)
	}
	if req.GetImage() == "" {
		return nil, invalid("image", "an image alias or fingerprint is required")
	}
	if err := config.Validate(req.GetConfig()); err != nil {
		return nil, toStatus(err)
	}
	img, err := s.resolveImage(ctx, req.GetImage())
	if err != nil {
		return nil, err
	}
	if req.GetPool() != "" {
		if _, err := s.fsm.Pool(req.GetPool()); err != nil {
			return nil, toStatus(fmt.Errorf("pool: %w", err))
		}
	}
	if _, err := s.fsm.Container(req.GetName()); err == nil {
		return nil, status.Errorf(codes.AlreadyExists, "name: container %q already exists", req.GetName())
	}
	desired := shoalv1.DesiredState_DESIRED_STATE_RUNNING
	if req.GetNoStart() {
		desired = shoalv1.DesiredState_DESIRED_STATE_STOPPED
	}
	pool := req.GetPool()
	if pool == "" {
		pool = s.defaultPool()
	}
	profiles, err := createProfiles(req)
	if err != nil {
		return nil, err
	}
	if err := validateDevices(req.GetDevices()); err != nil {
		return nil, err
	}
	expCfg, expDevs, err := s.fsm.Expand(profiles, req.GetConfig(), req.GetDevices())
	if err != nil {
		return nil, toStatus(err)
	}
	if err := checkExpanded(expCfg, expDevs); err != nil {
		return nil, err
	}
	if err := s.checkHA(expCfg, expDevs, pool); err != nil {
		return nil, err
	}
	// A container attaching custom volumes goes where they are.
	target := req.GetTarget()
	at, err := s.volumeMember(expDevs)
	if err != nil {
		return nil, err
	}
	if at != "" {
		if target != "" && target != at {
			return nil, precondition(fmt.Sprintf("target: the storage volumes the container attaches are on %s, not %s", at, target))
		}
		target = at
	}
	ct := &shoalv1.Container{
		Name: req.GetName(), ImageFingerprint: img.GetFingerprint(), ImageSource: req.GetImage(),
		Config: req.GetConfig(), DesiredState: desired,
		CreatedAtUnixNano: now(), Pool: pool, Hwaddr: network.RandomMAC(),
		Profiles: profiles, Devices: req.GetDevices(),
		// For placement; the cluster expands it again as it records it.
		ExpandedConfig: expCfg, ExpandedDevices: expDevs,
	}
	// eth0's address is allocated by the cluster in the entry that records
	// the container.
	ct.Nics = []*shoalv1.NIC{{Name: "eth0", Network: cmp.Or(req.GetNetwork(), s.node.DefaultNetwork()), Hwaddr: ct.GetHwaddr()}}
	if err := s.placeAndCreate(ctx, ct, target); err != nil {
		return nil, err
	}
	op := s.ops.Start("container-create", "containers/"+ct.GetName(), func(ctx context.Context, p *operations.Progress) (map[string]string, error) {
		for attempt := 0; ; attempt++ {
			owner := ct.GetNode()
			p.Phase("creating on " + owner)
			if owner == s.node.Name() {
				ctx := node.WithProgress(ctx, func(phase string, done, total int64) { p.Set(phase, done, total, "bytes") })
				if err := s.node.Reconcile(ctx, ct.GetName()); err != nil {
					s.undoCreate(ct.GetName(), desired)
					return nil, err
				}
				return map[string]string{"name": ct.GetName(), "node": owner}, nil
			}
			err := migration.WaitState(ctx, ownerAlive{engineCluster{s.cl}}, ct.GetName(), desired, p)
			if err == nil {
				return map[string]string{"name": ct.GetName(), "node": owner}, nil
			}
			if !errors.Is(err, errOwnerOffline) || attempt == 2 {
				return nil, err
			}
			// Its member died before it came up there: place it again
			// (or, pinned there, take the create back).
			if err := s.replace(ctx, ct, owner, target != ""); err != nil {
				return nil, fmt.Errorf("%v; %w", err, errOwnerOffline)
			}
			s.log.Info("container placed again: its member died before it came up", "container", ct.GetName(), "from", owner, "to", ct.GetNode())
		}
	})
	return &shoalv1.CreateContainerResponse{Operation: op}, nil
}

// placeAndCreate picks the container's node with the scheduler and records
// it in one Raft entry. The FSM re-checks the node's capacity when it
// applies the entry; if a concurrent create took the room first, placement
// runs again on the newer state.
func (s *Server) placeAndCreate(ctx context.Context, ct *shoalv1.Container, target string) error {
	req, err := cluster.PlacementRequest(ct.GetName(), cluster.ExpandedConfig(ct), target)
	if err != nil {
		return toStatus(err)
	}
	for attempt := 0; ; attempt++ {
		// Over the cluster's own view, kept current as entries apply:
		// nothing is copied or rebuilt per create.
		node, _, err := s.cl.Place(req, s.currentStrategy())
		var nofit *scheduler.NoFitError
		if errors.As(err, &nofit) && nofit.AllHost() {
			// No member can enforce a key the container sets: the
			// request cannot succeed until its config changes.
			return precondition(err.Error())
		}
		if err != nil {
			return toStatus(err)
		}
		ct.Node = node
		if node == s.node.Name() {
			if err := s.node.RemoveStale(ctx, ct.GetName()); err != nil {
				return toStatus(err)
			}
		}
		err = s.propose(ctx, &shoalv1.ContainerCreateCommand{Container: ct})
		if status.Code(err) == codes.AlreadyExists && s.isOurs(ct) {
			// A forwarded proposal that landed but whose answer was lost
			// (the leader died) is retried by the forwarder; the retry
			// finds this very create recorded.
			return nil
		}
		// ResourceExhausted: a concurrent create took the room; Aborted:
		// the leader knows the member is gone. Either way, place again,
		// on a view that has caught up with the entry that took the room
		// (a follower's view may not hold it yet).
		if c := status.Code(err); c != codes.ResourceExhausted && c != codes.Aborted || attempt == 2 {
			return err
		}
		if err := s.cl.Sync(ctx); err != nil {
			return toStatus(err)
		}
	}
}

// replace places a container again whose member died before it came up
// there, in one entry that moves the unborn record to a live member. A
// create pinned to that member (--target) is taken back instead: the
// record is deleted, and the dead member, when it returns, finds nothing
// it owns.
func (s *Server) replace(ctx context.Context, ct *shoalv1.Container, from string, pinned bool) error {
	why, _ := s.cl.Unreachable(from)
	if pinned {
		err := s.propose(ctx, &shoalv1.ContainerDeleteCommand{Name: ct.GetName()})
		if err != nil {
			return fmt.Errorf("member %s, its --target, is %s, and the create could not be taken back: %v", from, why, err)
		}
		return fmt.Errorf("member %s, its --target, is %s: the create was taken back", from, why)
	}
	req, err := cluster.PlacementRequest(ct.GetName(), cluster.ExpandedConfig(ct), "")
	if err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		snap, err := s.cl.PlacementSnapshot()
		if err != nil {
			return err
		}
		if err := snap.Remove(ct.GetName()); err != nil && !errors.Is(err, scheduler.ErrUnknownContainer) {
			return err
		}
		to, _, err := scheduler.Place(snap, req, s.currentStrategy())
		if err != nil {
			return fmt.Errorf("member %s is %s, and no other member can take the container: %w", from, why, err)
		}
		if to == s.node.Name() {
			if err := s.node.RemoveStale(ctx, ct.GetName()); err != nil {
				return err
			}
		}
		err = s.propose(ctx, &shoalv1.ContainerReplaceCommand{Name: ct.GetName(), From: from, To: to})
		if err == nil {
			ct.Node = to
			return nil
		}
		if c := status.Code(err); c != codes.ResourceExhausted && c != codes.Aborted || attempt == 2 {
			return fmt.Errorf("member %s is %s, and placing the container again failed: %w", from, why, err)
		}
	}
}

// checkHA refuses ha.enabled on a pool whose driver cannot send
// increments (dir): every RPO would resend the whole volume. The pools of
// the custom volumes it attaches (replicated with it) count too.
func (s *Server) checkHA(cfg map[string]string, devs map[string]*shoalv1.Device, pool string) error {
	if !ha.PolicyOf(cfg).Enabled {
		return nil
	}
	for _, k := range cluster.VolumeDevices(devs) {
		vpool, _, _ := strings.Cut(k, "/")
		p, err := s.fsm.Pool(vpool)
		if err != nil {
			return toStatus(fmt.Errorf("pool: %w", err))
		}
		if p.GetDriver() != "btrfs" {
			return invalid(ha.KeyEnabled, fmt.Sprintf("storage volume %s is on pool %s, whose %s driver cannot send increments: HA needs btrfs pools", k, vpool, p.GetDriver()))
		}
	}
	p, err := s.fsm.Pool(pool)
	if err != nil {
		return toStatus(fmt.Errorf("pool: %w", err))
	}
	if p.GetDriver() != "btrfs" {
		return invalid(ha.KeyEnabled, fmt.Sprintf("pool %s uses the %s driver, which cannot send increments: HA needs a btrfs pool", pool, p.GetDriver()))
	}
	return nil
}

// isOurs reports whether the recorded container is the one ct creates:
// the same creation time and MAC, both set by this call.
func (s *Server) isOurs(ct *shoalv1.Container) bool {
	rec, err := s.fsm.Container(ct.GetName())
	return err == nil && rec.GetCreatedAtUnixNano() == ct.GetCreatedAtUnixNano() && rec.GetHwaddr() == ct.GetHwaddr()
}

// ownerAlive is the cluster view a create waits on: a container whose
// owner dies before it comes up there will not come up, and the wait
// ends with that (at gossip's speed) rather than at its deadline.
type ownerAlive struct{ engineCluster }

// Container returns the record, or an error naming the owner once this
// member knows it is not answering and the owner never reported the
// container up.
func (c ownerAlive) Container(name string) (*shoalv1.Container, error) {
	ct, err := c.engineCluster.Container(name)
	if err != nil {
		return nil, err
	}
	if st := ct.GetStatus(); st != "" && st != "Pulling" {
		return ct, nil
	}
	if why, gone := c.Unreachable(ct.GetNode()); gone {
		return nil, fmt.Errorf("container %q: its member %s is %s, and it had not come up there: %w", name, ct.GetNode(), why, errOwnerOffline)
	}
	return ct, nil
}

// undoCreate handles a failed create: a container whose volume could not be
// made is removed again; one that exists but would not start is left
// stopped, as LXD does.
func (s *Server) undoCreate(name string, desired shoalv1.DesiredState) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if s.node.HasVolume(ctx, name) && desired == shoalv1.DesiredState_DESIRED_STATE_RUNNING {
		_ = s.cl.Propose(ctx, &shoalv1.ContainerDesiredStateCommand{Name: name, DesiredState: shoalv1.DesiredState_DESIRED_STATE_STOPPED})
		return
	}
	if err := s.cl.Propose(ctx, &shoalv1.ContainerDeleteCommand{Name: name}); err == nil {
		_ = s.node.Reconcile(ctx, name)
	}
}

func (s *Server) defaultPool() string {
	pools := s.fsm.Pools()
	for _, p := range pools {
		if p.GetName() == "default" {
			return p.GetName()
		}
	}
	if len(pools) > 0 {
		return pools[0].GetName()
	}
	return ""
}

// ListContainers lists all containers with their observed state: this
// node's from its runtime, other members' from them (in parallel, briefly),
// falling back to the status the owner last recorded.
func (s *Server) ListContainers(ctx context.Context, _ *shoalv1.ListContainersRequest) (*shoalv1.ListContainersResponse, error) {
	if err := s.current(ctx); err != nil {
		return nil, err
	}
	cts := s.fsm.Containers()
	out := make([]*shoalv1.ContainerInfo, len(cts))
	var local []*shoalv1.Container
	var at []int
	remote := map[string][]int{}
	for i, ct := range cts {
		if ct.GetNode() == s.node.Name() {
			local, at = append(local, ct), append(at, i)
			continue
		}
		out[i] = &shoalv1.ContainerInfo{Container: ct, State: &shoalv1.ContainerState{Status: ct.GetStatus()}}
		if why, gone := s.cl.Unreachable(ct.GetNode()); gone {
			// Its member is gone: nobody can say it runs.
			out[i] = unknownState(ct, why)
			continue
		}
		remote[ct.GetNode()] = append(remote[ct.GetNode()], i)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	if s.peers != nil && !forwarded(ctx) {
		for owner, idx := range remote {
			wg.Add(1)
			go func() {
				defer wg.Done()
				states, err := s.remoteStates(ctx, owner)
				mu.Lock()
				defer mu.Unlock()
				for _, i := range idx {
					if err != nil {
						out[i] = unknownState(cts[i], "not answering ("+status.Convert(err).Message()+")")
						continue
					}
					if st, ok := states[cts[i].GetName()]; ok {
						out[i].State = st
					}
				}
			}()
		}
	}
	for j, st := range s.node.States(ctx, local) {
		out[at[j]] = &shoalv1.ContainerInfo{Container: local[j], State: st}
	}
	wg.Wait()
	return &shoalv1.ListContainersResponse{Containers: out}, nil
}

// remoteStates asks a member for the live state of the containers it owns
// (an error when it does not answer within a second).
func (s *Server) remoteStates(ctx context.Context, owner string) (map[string]*shoalv1.ContainerState, error) {
	out := map[string]*shoalv1.ContainerState{}
	c, err := s.memberConn(owner)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(s.outgoing(ctx), time.Second)
	defer cancel()
	resp, err := shoalv1.NewContainerServiceClient(c).ListContainers(ctx, &shoalv1.ListContainersRequest{})
	if err != nil {
		return nil, err
	}
	for _, info := range resp.GetContainers() {
		if info.GetContainer().GetNode() == owner {
			out[info.GetContainer().GetName()] = info.GetState()
		}
	}
	return out, nil
}

// unknownState is how a container on a member that does not answer is
// listed: Unknown, never the state it last reported, with its member's
// state as the status message.
func unknownState(ct *shoalv1.Container, why string) *shoalv1.ContainerInfo {
	ct = proto.Clone(ct).(*shoalv1.Container)
	ct.StatusMessage = "member " + ct.GetNode() + " is " + why
	return &shoalv1.ContainerInfo{Container: ct, State: &shoalv1.ContainerState{Status: "Unknown"}}
}

// GetContainer returns one container with its usage.
func (s *Server) GetContainer(ctx context.Context, req *shoalv1.GetContainerRequest) (*shoalv1.GetContainerResponse, error) {
	if err := s.current(ctx); err != nil {
		return nil, err
	}
	ct, err := s.container(req.GetName())
	if err != nil {
		return nil, err
	}
	return &shoalv1.GetContainerResponse{Container: s.info(ctx, ct, true)}, nil
}

// updateTries bounds how often UpdateContainer reads again after a
// concurrent write changed the container under it.
const updateTries = 8

// UpdateContainer sets and unsets config keys; nothing changes unless the
// whole resulting config is valid. The change is a compare-and-set on the
// record it was computed from: a concurrent update of other keys is read
// again and kept, never overwritten.
func (s *Server) UpdateContainer(ctx context.Context, req *shoalv1.UpdateContainerRequest) (*shoalv1.UpdateContainerResponse, error) {
	for try := 1; ; try++ {
		ct, err := s.container(req.GetName())
		if err != nil {
			return nil, err
		}
		cmd, err := s.updateCommand(ct, req)
		if err != nil {
			return nil, err
		}
		err = s.cl.Propose(ctx, cmd)
		// Another write landed first (a refusal forwarded from the leader
		// arrives as its status code): catch up, then read again.
		if (errors.Is(err, cluster.ErrStale) || status.Code(err) == codes.Aborted) && try < updateTries {
			if err := s.cl.Sync(ctx); err != nil {
				return nil, toStatus(err)
			}
			continue
		}
		if err != nil {
			return nil, toStatus(err)
		}
		break
	}
	if err := s.node.Reconcile(ctx, req.GetName()); err != nil {
		return nil, toStatus(err)
	}
	return s.infoResponse(ctx, req.GetName())
}

// updateCommand validates req against ct and returns the entry that makes
// the change, conditional on ct's revision.
func (s *Server) updateCommand(ct *shoalv1.Container, req *shoalv1.UpdateContainerRequest) (*shoalv1.ContainerUpdateCommand, error) {
	cfg := map[string]string{}
	for k, v := range ct.GetConfig() {
		cfg[k] = v
	}
	keys := make([]string, 0, len(req.GetSet()))
	for k := range req.GetSet() {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := req.GetSet()[k]
		if err := config.ValidateKey(k, v); err != nil {
			return nil, toStatus(err)
		}
		if config.CreationOnly(k) && cfg[k] != v {
			return nil, precondition(k + ": can only be set when the container is created")
		}
		cfg[k] = v
	}
	// The owner decides whether it can enforce what is set (this call is
	// routed to it): refused keys change nothing.
	if err := s.node.CheckEnforceable(ct.GetNode(), req.GetSet()); err != nil {
		return nil, precondition(err.Error())
	}
	for _, k := range req.GetUnset() {
		if config.CreationOnly(k) && cfg[k] != "" {
			return nil, precondition(k + ": can only be set when the container is created")
		}
		if strings.HasPrefix(k, "volatile.") {
			return nil, invalid(k, "volatile.* keys are internal and cannot be unset")
		}
		delete(cfg, k)
	}
	profiles := ct.GetProfiles()
	if req.GetSetProfiles() {
		profiles = req.GetProfiles()
	}
	if err := validateDevices(req.GetSetDevices()); err != nil {
		return nil, err
	}
	devs, err := updatedDevices(ct, req.GetSetDevices(), req.GetRemoveDevices())
	if err != nil {
		return nil, err
	}
	expCfg, expDevs, err := s.fsm.Expand(profiles, cfg, devs)
	if err != nil {
		return nil, toStatus(err)
	}
	if err := checkExpanded(expCfg, expDevs); err != nil {
		return nil, err
	}
	if k := changedCreationOnly(cluster.ExpandedConfig(ct), expCfg); k != "" {
		return nil, precondition(k + ": can only be set when the container is created")
	}
	if err := s.checkHA(expCfg, expDevs, ct.GetPool()); err != nil {
		return nil, err
	}
	if err := s.checkVolumesOn(ct.GetName(), ct.GetNode(), expDevs); err != nil {
		return nil, err
	}
	setDevices := len(req.GetSetDevices()) > 0 || len(req.GetRemoveDevices()) > 0
	if setDevices && ct.GetDesiredState() != shoalv1.DesiredState_DESIRED_STATE_STOPPED {
		if err := s.node.CheckDevices(ct.GetName(), expDevs); err != nil {
			return nil, toStatus(err)
		}
	}
	rev := ct.GetRevision()
	return &shoalv1.ContainerUpdateCommand{Name: ct.GetName(), Config: cfg, IfRevision: &rev,
		SetProfiles: req.GetSetProfiles(), Profiles: profiles, SetDevices: setDevices, Devices: devs}, nil
}

func (s *Server) infoResponse(ctx context.Context, name string) (*shoalv1.UpdateContainerResponse, error) {
	ct, err := s.container(name)
	if err != nil {
		return nil, err
	}
	return &shoalv1.UpdateContainerResponse{Container: s.info(ctx, ct, false)}, nil
}

// DeleteContainer deletes a container and its snapshots.
func (s *Server) DeleteContainer(ctx context.Context, req *shoalv1.DeleteContainerRequest) (*shoalv1.DeleteContainerResponse, error) {
	ct, err := s.container(req.GetName())
	if err != nil {
		return nil, err
	}
	if !req.GetForce() {
		if st := s.node.State(ctx, ct, false); st.GetStatus() != "Stopped" {
			return nil, precondition(fmt.Sprintf("container %q is %s: stop it first or delete with force", ct.GetName(), st.GetStatus()))
		}
	}
	s.node.SetStopTimeout(ct.GetName(), 0)
	if err := s.propose(ctx, &shoalv1.ContainerDeleteCommand{Name: ct.GetName()}); err != nil {
		return nil, err
	}
	if err := s.node.Reconcile(ctx, ct.GetName()); err != nil {
		return nil, toStatus(err)
	}
	s.bus.Lifecycle(s.node.Name(), "container-deleted", ct.GetName())
	return &shoalv1.DeleteContainerResponse{}, nil
}

// ChangeContainerState starts, stops, restarts, freezes or unfreezes.
func (s *Server) ChangeContainerState(ctx context.Context, req *shoalv1.ChangeContainerStateRequest) (*shoalv1.ChangeContainerStateResponse, error) {
	ct, err := s.container(req.GetName())
	if err != nil {
		return nil, err
	}
	timeout := time.Duration(req.GetTimeoutSeconds()) * time.Second
	if req.GetTimeoutSeconds() < 0 {
		return nil, invalid("timeout_seconds", "must not be negative")
	}
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	if req.GetForce() {
		timeout = 0
	}
	var desired shoalv1.DesiredState
	switch req.GetAction() {
	case shoalv1.StateAction_STATE_ACTION_START:
		desired = shoalv1.DesiredState_DESIRED_STATE_RUNNING
	case shoalv1.StateAction_STATE_ACTION_STOP:
		desired = shoalv1.DesiredState_DESIRED_STATE_STOPPED
		s.node.SetStopTimeout(ct.GetName(), timeout)
	case shoalv1.StateAction_STATE_ACTION_RESTART:
		if st := s.node.State(ctx, ct, false); st.GetStatus() != "Running" {
			return nil, precondition(fmt.Sprintf("container %q is %s, not Running", ct.GetName(), st.GetStatus()))
		}
		if err := s.node.Restart(ctx, ct.GetName(), timeout); err != nil {
			return nil, toStatus(err)
		}
		return s.stateResponse(ctx, ct.GetName())
	case shoalv1.StateAction_STATE_ACTION_FREEZE, shoalv1.StateAction_STATE_ACTION_UNFREEZE:
		want := "Running"
		desired = shoalv1.DesiredState_DESIRED_STATE_FROZEN
		if req.GetAction() == shoalv1.StateAction_STATE_ACTION_UNFREEZE {
			want, desired = "Frozen", shoalv1.DesiredState_DESIRED_STATE_RUNNING
		}
		if st := s.node.State(ctx, ct, false); st.GetStatus() != want {
			return nil, precondition(fmt.Sprintf("container %q is %s, not %s", ct.GetName(), st.GetStatus(), want))
		}
	default:
		return nil, invalid("action", "must be one of start, stop, restart, freeze, unfreeze")
	}
	if ct.GetDesiredState() != desired {
		if err := s.propose(ctx, &shoalv1.ContainerDesiredStateCommand{Name: ct.GetName(), DesiredState: desired}); err != nil {
			return nil, err
		}
	}
	if err := s.node.Reconcile(ctx, ct.GetName()); err != nil {
		return nil, toStatus(err)
	}
	return s.stateResponse(ctx, ct.GetName())
}

func (s *Server) stateResponse(ctx context.Context, name string) (*shoalv1.ChangeContainerStateResponse, error) {
	ct, err := s.container(name)
	if err != nil {
		return nil, err
	}
	return &shoalv1.ChangeContainerStateResponse{Container: s.info(ctx, ct, false)}, nil
}

// CopyContainer copies a container (with its snapshots unless
// instance_only); the copy is left stopped, as LXD does.
func (s *Server) CopyContainer(ctx context.Context, req *shoalv1.CopyContainerRequest) (*shoalv1.CopyContainerResponse, error) {
	src, err := s.container(req.GetSource())
	if err != nil {
		return nil, err
	}
	if err := config.ValidateName("name", req.GetName()); err != nil {
		return nil, toStatus(err)
	}
	if req.GetRefresh() {
		return s.refreshCopy(ctx, src, req)
	}
	if _, err := s.fsm.Container(req.GetName()); err == nil {
		return nil, status.Errorf(codes.AlreadyExists, "name: container %q already exists (refresh it with --refresh)", req.GetName())
	}
	if err := config.Validate(req.GetConfig()); err != nil {
		return nil, toStatus(err)
	}
	cfg := map[string]string{}
	for k, v := range src.GetConfig() {
		if !strings.HasPrefix(k, "volatile.") {
			cfg[k] = v
		}
	}
	for k, v := range req.GetConfig() {
		cfg[k] = v
	}
	if err := config.Validate(cfg); err != nil {
		return nil, toStatus(err)
	}
	target := req.GetTarget()
	if target == s.node.Name() {
		target = ""
	}
	if target != "" {
		if _, err := s.fsm.Node(target); err != nil {
			return nil, toStatus(fmt.Errorf("target: %w", err))
		}
		if s.peers == nil {
			return nil, precondition("this node is not in a cluster")
		}
	}
	expCfg, expDevs, err := s.fsm.Expand(src.GetProfiles(), cfg, src.GetDevices())
	if err != nil {
		return nil, toStatus(err)
	}
	if err := s.checkVolumesOn(req.GetName(), cmp.Or(target, s.node.Name()), expDevs); err != nil {
		return nil, err
	}
	if err := s.node.CheckEnforceable(cmp.Or(target, s.node.Name()), expCfg); err != nil {
		return nil, precondition(err.Error())
	}
	var records []*shoalv1.Snapshot
	if !req.GetInstanceOnly() {
		for _, sn := range src.GetSnapshots() {
			records = append(records, proto.Clone(sn).(*shoalv1.Snapshot))
		}
	}
	spec := migration.CopySpec{Source: src, Copy: &shoalv1.Container{
		Name: req.GetName(), ImageFingerprint: src.GetImageFingerprint(), ImageSource: src.GetImageSource(),
		Config: cfg, Node: cmp.Or(target, s.node.Name()), DesiredState: shoalv1.DesiredState_DESIRED_STATE_STOPPED,
		Pool: src.GetPool(), Hwaddr: network.RandomMAC(), Snapshots: records,
		Profiles: src.GetProfiles(), Devices: src.GetDevices(),
	}}
	// The copy joins the same networks with new MACs and new addresses.
	for i, nic := range src.GetNics() {
		mac := spec.Copy.GetHwaddr()
		if i > 0 {
			mac = network.RandomMAC()
		}
		spec.Copy.Nics = append(spec.Copy.Nics, &shoalv1.NIC{Name: nic.GetName(), Network: nic.GetNetwork(), Hwaddr: mac})
	}
	op := s.ops.Start("container-copy", "containers/"+req.GetName(), func(ctx context.Context, p *operations.Progress) (map[string]string, error) {
		spec.Copy.CreatedAtUnixNano = now()
		return s.source.Copy(ctx, spec, p)
	})
	return &shoalv1.CopyContainerResponse{Operation: op}, nil
}

// refreshCopy brings an existing copy up to date with its source: the
// snapshots it lacks and the current content are sent incrementally on the
// newest snapshot both have (the copy must be stopped).
func (s *Server) refreshCopy(ctx context.Context, src *shoalv1.Container, req *shoalv1.CopyContainerRequest) (*shoalv1.CopyContainerResponse, error) {
	dst, err := s.container(req.GetName())
	if err != nil {
		return nil, err
	}
	if req.GetTarget() != "" && req.GetTarget() != dst.GetNode() {
		return nil, invalid("target", fmt.Sprintf("the copy %q is on %s", dst.GetName(), dst.GetNode()))
	}
	if _, _, err := migration.PlanRefresh(src, dst); err != nil {
		return nil, toStatus(err)
	}
	if s.peers == nil {
		return nil, precondition("this node is not in a cluster")
	}
	op := s.ops.Start("container-copy", "containers/"+dst.GetName(), func(ctx context.Context, p *operations.Progress) (map[string]string, error) {
		return s.source.Refresh(ctx, src, dst, p)
	})
	return &shoalv1.CopyContainerResponse{Operation: op}, nil
}

// CreateSnapshot snapshots a container's volume and records its config.
func (s *Server) CreateSnapshot(ctx context.Context, req *shoalv1.CreateSnapshotRequest) (*shoalv1.CreateSnapshotResponse, error) {
	ct, err := s.container(req.GetContainer())
	if err != nil {
		return nil, err
	}
	taken := time.Now()
	name, expires, err := snapshotNameAndExpiry(ct, req, taken)
	if err != nil {
		return nil, err
	}
	req = proto.Clone(req).(*shoalv1.CreateSnapshotRequest)
	req.Name = name
	for _, sn := range ct.GetSnapshots() {
		if sn.GetName() == req.GetName() {
			return nil, status.Errorf(codes.AlreadyExists, "snapshot: %q of %q already exists", req.GetName(), ct.GetName())
		}
	}
	if req.GetStateful() {
		if ct.GetDesiredState() != shoalv1.DesiredState_DESIRED_STATE_RUNNING {
			return nil, precondition(fmt.Sprintf("a stateful snapshot needs a running container; %q is not running", ct.GetName()))
		}
		if err := s.node.CreateStatefulSnapshot(ctx, ct, req.GetName()); err != nil {
			return nil, toStatus(err)
		}
	} else if err := s.node.CreateSnapshot(ctx, ct, req.GetName()); err != nil {
		return nil, toStatus(err)
	}
	sn := &shoalv1.Snapshot{Name: req.GetName(), CreatedAtUnixNano: taken.UnixNano(), Config: ct.GetConfig(), Stateful: req.GetStateful(),
		ExpiresAtUnixNano: expires}
	if err := s.propose(ctx, &shoalv1.SnapshotCreateCommand{Container: ct.GetName(), Snapshot: sn}); err != nil {
		_ = s.node.DeleteSnapshot(context.Background(), ct, req.GetName())
		return nil, err
	}
	s.bus.Lifecycle(s.node.Name(), "container-snapshot-created", ct.GetName()+"/"+req.GetName())
	return &shoalv1.CreateSnapshotResponse{Snapshot: sn}, nil
}

// ListSnapshots lists a container's snapshots, oldest first.
func (s *Server) ListSnapshots(ctx context.Context, req *shoalv1.ListSnapshotsRequest) (*shoalv1.ListSnapshotsResponse, error) {
	if err := s.current(ctx); err != nil {
		return nil, err
	}
	ct, err := s.container(req.GetContainer())
	if err != nil {
		return nil, err
	}
	return &shoalv1.ListSnapshotsResponse{Snapshots: ct.GetSnapshots()}, nil
}

func snapshotOf(ct *shoalv1.Container, name string) (*shoalv1.Snapshot, error) {
	for _, sn := range ct.GetSnapshots() {
		if sn.GetName() == name {
			return sn, nil
		}
	}
	return nil, status.Errorf(codes.NotFound, "snapshot: %q of %q not found", name, ct.GetName())
}

// RestoreSnapshot rolls a container back to a snapshot, config included.
func (s *Server) RestoreSnapshot(ctx context.Context, req *shoalv1.RestoreSnapshotRequest) (*shoalv1.RestoreSnapshotResponse, error) {
	ct, err := s.container(req.GetContainer())
	if err != nil {
		return nil, err
	}
	sn, err := snapshotOf(ct, req.GetName())
	if err != nil {
		return nil, err
	}
	stateful := sn.GetStateful() && !req.GetStateless()
	if stateful && !s.node.HasSnapshotState(ct.GetName(), sn.GetName()) {
		return nil, precondition(fmt.Sprintf("the process state of snapshot %q stayed on the member that took it; restore it with --stateless to boot from its files", sn.GetName()))
	}
	commit := func(ctx context.Context) error {
		if !equalMaps(sn.GetConfig(), ct.GetConfig()) {
			if err := s.propose(ctx, &shoalv1.ContainerUpdateCommand{Name: ct.GetName(), Config: sn.GetConfig()}); err != nil {
				return err
			}
		}
		if stateful && ct.GetDesiredState() != shoalv1.DesiredState_DESIRED_STATE_RUNNING {
			// Resumed processes mean a running container.
			return s.propose(ctx, &shoalv1.ContainerDesiredStateCommand{Name: ct.GetName(), DesiredState: shoalv1.DesiredState_DESIRED_STATE_RUNNING})
		}
		return nil
	}
	if err := s.node.RestoreSnapshot(ctx, ct, req.GetName(), stateful, commit); err != nil {
		return nil, toStatus(err)
	}
	return &shoalv1.RestoreSnapshotResponse{}, nil
}

// DeleteSnapshot deletes a snapshot from the host and the cluster.
func (s *Server) DeleteSnapshot(ctx context.Context, req *shoalv1.DeleteSnapshotRequest) (*shoalv1.DeleteSnapshotResponse, error) {
	ct, err := s.container(req.GetContainer())
	if err != nil {
		return nil, err
	}
	if _, err := snapshotOf(ct, req.GetName()); err != nil {
		return nil, err
	}
	// The record goes first: a daemon that dies before the host's part
	// finds an unrecorded snapshot when it starts again and deletes it
	// (node/leftovers.go), where the other order would leave a record
	// of a snapshot whose data is gone.
	if err := s.propose(ctx, &shoalv1.SnapshotDeleteCommand{Container: ct.GetName(), Name: req.GetName()}); err != nil && status.Code(err) != codes.NotFound {
		return nil, err
	}
	if err := s.node.DeleteSnapshot(ctx, ct, req.GetName()); err != nil && !errors.Is(err, storage.ErrNotFound) {
		return nil, status.Errorf(codes.Internal, "snapshot %q of %q is deleted from the cluster's records, but member %s could not remove its data (it does when shoald starts again): %v",
			req.GetName(), ct.GetName(), s.node.Name(), err)
	}
	s.bus.Lifecycle(s.node.Name(), "container-snapshot-deleted", ct.GetName()+"/"+req.GetName())
	return &shoalv1.DeleteSnapshotResponse{}, nil
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if bv, ok := b[k]; !ok || bv != v {
			return false
		}
	}
	return true
}
