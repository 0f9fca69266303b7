package api

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/internal/config"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// evacuatedKey marks a container stopped by an evacuation (LXD keeps the
// same kind of note in volatile.*), so restore restarts only those.
const evacuatedKey = "volatile.evacuated"

// evacuateWait bounds how long evacuate and restore wait for the owner.
const evacuateWait = 2 * time.Minute

// Keys an evacuation leaves on the containers it moved (as LXD's
// volatile.evacuate.origin), so that restore moves them back.
const (
	evacuateOriginKey = "volatile.evacuate.origin"
	evacuateLiveKey   = "volatile.evacuate.live"
)

// EvacuateMember marks a member evacuated (the scheduler places nothing
// there) and moves its running containers to other members: cold (stopped,
// sent, started there), or with live, live where CRIU can and cold where it
// cannot. A container no other member can take is stopped where it is
// instead. Restore moves the moved ones back and starts the stopped ones.
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
				var how string
				live := req.GetLive() || config.Bool(ct.GetConfig(), "migration.stateful")
				if how, err = s.evacuateOne(ctx, ct, target, live); err == nil {
					resp.Moved = append(resp.Moved, ct.GetName()+":"+target+how)
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

// evacuateOne moves one container off an evacuated member (live first when
// asked, cold if that fails) and notes where it came from. It returns
// ":live" for a live move.
func (s *Server) evacuateOne(ctx context.Context, ct *shoalv1.Container, target string, live bool) (string, error) {
	origin := ct.GetNode()
	how := ""
	err := errors.New("not moved")
	if live {
		if err = s.moveAndWait(ctx, ct, target, true); err == nil {
			how = ":live"
		} else {
			s.log.Warn("evacuate: live move failed; moving it cold", "container", ct.GetName(), "err", err)
			if ct, err = s.fsm.Container(ct.GetName()); err != nil {
				return "", err
			}
			if ct.GetNode() != origin { // it moved after all
				err = nil
			}
		}
	}
	if err != nil {
		if err = s.moveAndWait(ctx, ct, target, false); err != nil {
			return "", err
		}
	}
	moved, err := s.fsm.Container(ct.GetName())
	if err != nil {
		return "", err
	}
	cfg := moved.GetConfig()
	if cfg == nil {
		cfg = map[string]string{}
	}
	cfg[evacuateOriginKey] = origin
	cfg[evacuateLiveKey] = fmt.Sprint(how == ":live")
	if err := s.propose(ctx, &shoalv1.ContainerUpdateCommand{Name: ct.GetName(), Config: cfg}); err != nil {
		return "", err
	}
	return how, nil
}

// RestoreMember brings an evacuated member back online, moves back the
// containers the evacuation moved away (live if they left live) and
// starts the ones it stopped.
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
	for _, ct := range s.fsm.Containers() {
		if ct.GetConfig()[evacuateOriginKey] != n.GetName() {
			continue
		}
		live := ct.GetConfig()[evacuateLiveKey] == "true" && ct.GetDesiredState() == shoalv1.DesiredState_DESIRED_STATE_RUNNING
		if ct.GetNode() != n.GetName() {
			if err := s.moveAndWait(ctx, ct, n.GetName(), live); err != nil && live {
				s.log.Warn("restore: live move back failed; moving it cold", "container", ct.GetName(), "err", err)
				live = false
				if ct, err = s.fsm.Container(ct.GetName()); err != nil {
					return nil, toStatus(err)
				}
				if ct.GetNode() != n.GetName() {
					if err := s.moveAndWait(ctx, ct, n.GetName(), false); err != nil {
						return nil, toStatus(fmt.Errorf("move %s back: %w", ct.GetName(), err))
					}
				}
			} else if err != nil {
				return nil, toStatus(fmt.Errorf("move %s back: %w", ct.GetName(), err))
			}
		}
		back, err := s.fsm.Container(ct.GetName())
		if err != nil {
			return nil, toStatus(err)
		}
		cfg := back.GetConfig()
		delete(cfg, evacuateOriginKey)
		delete(cfg, evacuateLiveKey)
		if err := s.propose(ctx, &shoalv1.ContainerUpdateCommand{Name: ct.GetName(), Config: cfg}); err != nil {
			return nil, err
		}
		entry := ct.GetName() + ":" + ct.GetNode()
		if live {
			entry += ":live"
		}
		resp.MovedBack = append(resp.MovedBack, entry)
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
