package api

import (
	"context"
	"fmt"
	"time"

	"github.com/shoal-dev/shoal/cluster"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// evacuatedKey marks a container stopped by an evacuation (LXD keeps the
// same kind of note in volatile.*), so restore restarts only those.
const evacuatedKey = "volatile.evacuated"

// evacuateWait bounds how long evacuate and restore wait for the owner.
const evacuateWait = 2 * time.Minute

// EvacuateMember marks a member evacuated (the scheduler places nothing
// there) and moves its running containers to other members (cold: stopped,
// sent, started there). A container no other member can take is stopped
// where it is instead; restore starts those again.
func (s *Server) EvacuateMember(ctx context.Context, req *shoalv1.EvacuateMemberRequest) (*shoalv1.EvacuateMemberResponse, error) {
	n, err := s.fsm.Node(req.GetName())
	if err != nil {
		return nil, toStatus(err)
	}
	if n.GetStatus() != cluster.StatusEvacuated {
		n.Status = cluster.StatusEvacuated
		if err := s.propose(ctx, &shoalv1.NodeUpsertCommand{Node: n}); err != nil {
			return nil, err
		}
	}
	resp := &shoalv1.EvacuateMemberResponse{}
	for _, ct := range s.fsm.Containers() {
		if ct.GetNode() != n.GetName() || ct.GetDesiredState() == shoalv1.DesiredState_DESIRED_STATE_STOPPED {
			continue
		}
		if s.peers != nil {
			target, err := s.moveTarget(ct, "")
			if err == nil {
				if err = s.moveAndWait(ctx, ct, target); err == nil {
					resp.Moved = append(resp.Moved, ct.GetName()+":"+target)
					continue
				}
			}
			s.log.Warn("evacuate: cannot move; stopping it in place", "container", ct.GetName(), "err", err)
			if ct, err = s.fsm.Container(ct.GetName()); err != nil {
				return nil, toStatus(err)
			}
		}
		cfg := ct.GetConfig()
		if cfg == nil {
			cfg = map[string]string{}
		}
		cfg[evacuatedKey] = "true"
		if err := s.propose(ctx, &shoalv1.ContainerUpdateCommand{Name: ct.GetName(), Config: cfg}); err != nil {
			return nil, err
		}
		if err := s.propose(ctx, &shoalv1.ContainerDesiredStateCommand{Name: ct.GetName(), DesiredState: shoalv1.DesiredState_DESIRED_STATE_STOPPED}); err != nil {
			return nil, err
		}
		resp.Stopped = append(resp.Stopped, ct.GetName())
	}
	if err := s.waitAll(ctx, resp.Stopped, shoalv1.DesiredState_DESIRED_STATE_STOPPED); err != nil {
		return nil, err
	}
	s.bus.Lifecycle(s.node.Name(), "cluster-member-evacuated", n.GetName())
	return resp, nil
}

// RestoreMember brings an evacuated member back online and starts the
// containers the evacuation stopped.
func (s *Server) RestoreMember(ctx context.Context, req *shoalv1.RestoreMemberRequest) (*shoalv1.RestoreMemberResponse, error) {
	n, err := s.fsm.Node(req.GetName())
	if err != nil {
		return nil, toStatus(err)
	}
	if n.GetStatus() != cluster.StatusEvacuated {
		return nil, precondition(fmt.Sprintf("member %q is %s, not evacuated", n.GetName(), n.GetStatus()))
	}
	n.Status = cluster.StatusOnline
	if err := s.propose(ctx, &shoalv1.NodeUpsertCommand{Node: n}); err != nil {
		return nil, err
	}
	resp := &shoalv1.RestoreMemberResponse{}
	for _, ct := range s.fsm.Containers() {
		if ct.GetNode() != n.GetName() || ct.GetConfig()[evacuatedKey] == "" {
			continue
		}
		cfg := ct.GetConfig()
		delete(cfg, evacuatedKey)
		if err := s.propose(ctx, &shoalv1.ContainerUpdateCommand{Name: ct.GetName(), Config: cfg}); err != nil {
			return nil, err
		}
		if err := s.propose(ctx, &shoalv1.ContainerDesiredStateCommand{Name: ct.GetName(), DesiredState: shoalv1.DesiredState_DESIRED_STATE_RUNNING}); err != nil {
			return nil, err
		}
		resp.Started = append(resp.Started, ct.GetName())
	}
	if err := s.waitAll(ctx, resp.Started, shoalv1.DesiredState_DESIRED_STATE_RUNNING); err != nil {
		return nil, err
	}
	s.bus.Lifecycle(s.node.Name(), "cluster-member-restored", n.GetName())
	return resp, nil
}

// waitAll waits until every named container reports the desired state;
// local ones are reconciled right away.
func (s *Server) waitAll(ctx context.Context, names []string, desired shoalv1.DesiredState) error {
	ctx, cancel := context.WithTimeout(ctx, evacuateWait)
	defer cancel()
	for _, name := range names {
		if ct, err := s.fsm.Container(name); err == nil && ct.GetNode() == s.node.Name() {
			if err := s.node.Reconcile(ctx, name); err != nil {
				return toStatus(err)
			}
		}
		if err := s.waitRemote(ctx, name, desired); err != nil {
			return toStatus(fmt.Errorf("%s: %w", name, err))
		}
	}
	return nil
}
