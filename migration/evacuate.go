package migration

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/internal/config"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// Keys an evacuation leaves on containers (as LXD's volatile.evacuate.*).
const (
	// EvacuatedKey marks a container stopped in place by an evacuation, so
	// restore restarts only those.
	EvacuatedKey = "volatile.evacuated"
	// EvacuateOriginKey and EvacuateLiveKey mark a container an evacuation
	// moved, so that restore moves it back (live if it left live).
	EvacuateOriginKey = "volatile.evacuate.origin"
	EvacuateLiveKey   = "volatile.evacuate.live"
)

// evacuateWait bounds how long evacuate and restore wait for an owner.
const evacuateWait = 2 * time.Minute

// Members is the cluster's view of members and containers an evacuation
// plans from.
type Members interface {
	Member(name string) (*shoalv1.Node, error)
	Containers() []*shoalv1.Container
}

// Fleet is how an evacuation reaches the cluster: the moves it plans run
// on each container's owner, as a user's move does.
type Fleet struct {
	Members Members
	// Place picks a member other than its owner for a container. Nil: the
	// member is alone, and containers are stopped in place.
	Place func(ct *shoalv1.Container) (string, error)
	// Move moves a container to target through its owner (an operation
	// there running Move or LiveMove) and waits for it to end.
	Move func(ctx context.Context, ct *shoalv1.Container, target string, live bool) error
}

// Evacuate marks a member evacuated (nothing is placed there) and moves
// its running containers to other members: cold, or with live (or
// migration.stateful) live first and cold if that fails. A container no
// other member can take is stopped where it is instead.
func (e *Source) Evacuate(ctx context.Context, f Fleet, member string, live bool) (*shoalv1.EvacuateMemberResponse, error) {
	n, err := f.Members.Member(member)
	if err != nil {
		return nil, err
	}
	if n.GetStatus() != cluster.StatusEvacuated {
		n.Status = cluster.StatusEvacuated
		if err := e.cl.Propose(ctx, &shoalv1.NodeUpsertCommand{Node: n}); err != nil {
			return nil, err
		}
	}
	resp := &shoalv1.EvacuateMemberResponse{}
	for _, ct := range f.Members.Containers() {
		if ct.GetNode() != n.GetName() || ct.GetDesiredState() == shoalv1.DesiredState_DESIRED_STATE_STOPPED {
			continue
		}
		if f.Place != nil {
			target, err := f.Place(ct)
			if err == nil {
				var how string
				live := live || config.Bool(cluster.ExpandedConfig(ct), "migration.stateful")
				if how, err = e.evacuateOne(ctx, f, ct, target, live); err == nil {
					resp.Moved = append(resp.Moved, ct.GetName()+":"+target+how)
					continue
				}
			}
			e.log.Warn("evacuate: cannot move; stopping it in place", "container", ct.GetName(), "err", err)
			if ct, err = e.cl.Container(ct.GetName()); err != nil {
				return nil, err
			}
		}
		set := &shoalv1.ContainerUpdateCommand{Name: ct.GetName(), KeepConfig: true, SetConfig: map[string]string{EvacuatedKey: "true"}}
		if err := e.setConfigAndState(ctx, set, shoalv1.DesiredState_DESIRED_STATE_STOPPED); err != nil {
			return nil, err
		}
		resp.Stopped = append(resp.Stopped, ct.GetName())
	}
	if err := e.waitAll(ctx, resp.Stopped, shoalv1.DesiredState_DESIRED_STATE_STOPPED); err != nil {
		return nil, err
	}
	e.events.Lifecycle(e.host.Name(), "cluster-member-evacuated", n.GetName())
	return resp, nil
}

// evacuateOne moves one container off an evacuated member (live first when
// asked, cold if that fails) and notes where it came from. It returns
// ":live" for a live move.
func (e *engine) evacuateOne(ctx context.Context, f Fleet, ct *shoalv1.Container, target string, live bool) (string, error) {
	origin := ct.GetNode()
	how := ""
	err := errors.New("not moved")
	if live {
		if err = f.Move(ctx, ct, target, true); err == nil {
			how = ":live"
		} else {
			e.log.Warn("evacuate: live move failed; moving it cold", "container", ct.GetName(), "err", err)
			if ct, err = e.cl.Container(ct.GetName()); err != nil {
				return "", err
			}
			if ct.GetNode() != origin { // it moved after all
				err = nil
			}
		}
	}
	if err != nil {
		if err = f.Move(ctx, ct, target, false); err != nil {
			return "", err
		}
	}
	moved, err := e.cl.Container(ct.GetName())
	if err != nil {
		return "", err
	}
	if err := e.cl.Propose(ctx, &shoalv1.ContainerUpdateCommand{Name: moved.GetName(), KeepConfig: true,
		SetConfig: map[string]string{EvacuateOriginKey: origin, EvacuateLiveKey: fmt.Sprint(how == ":live")}}); err != nil {
		return "", err
	}
	return how, nil
}

// RestoreMember brings an evacuated member back online, moves back the
// containers the evacuation moved away (live if they left live) and
// starts the ones it stopped.
func (e *Source) RestoreMember(ctx context.Context, f Fleet, member string) (*shoalv1.RestoreMemberResponse, error) {
	n, err := f.Members.Member(member)
	if err != nil {
		return nil, err
	}
	if n.GetStatus() != cluster.StatusEvacuated {
		return nil, mark(ErrConflict, "member %q is %s, not evacuated", n.GetName(), n.GetStatus())
	}
	n.Status = cluster.StatusOnline
	if err := e.cl.Propose(ctx, &shoalv1.NodeUpsertCommand{Node: n}); err != nil {
		return nil, err
	}
	resp := &shoalv1.RestoreMemberResponse{}
	for _, ct := range f.Members.Containers() {
		if ct.GetNode() != n.GetName() || ct.GetConfig()[EvacuatedKey] == "" {
			continue
		}
		unset := &shoalv1.ContainerUpdateCommand{Name: ct.GetName(), KeepConfig: true, UnsetConfig: []string{EvacuatedKey}}
		if err := e.setConfigAndState(ctx, unset, shoalv1.DesiredState_DESIRED_STATE_RUNNING); err != nil {
			return nil, err
		}
		resp.Started = append(resp.Started, ct.GetName())
	}
	if err := e.waitAll(ctx, resp.Started, shoalv1.DesiredState_DESIRED_STATE_RUNNING); err != nil {
		return nil, err
	}
	for _, ct := range f.Members.Containers() {
		if ct.GetConfig()[EvacuateOriginKey] != n.GetName() {
			continue
		}
		entry, err := e.moveBack(ctx, f, ct, n.GetName())
		if err != nil {
			return nil, err
		}
		resp.MovedBack = append(resp.MovedBack, entry)
	}
	e.events.Lifecycle(e.host.Name(), "cluster-member-restored", n.GetName())
	return resp, nil
}

// moveBack moves a container an evacuation moved back to its origin (live
// if it left live, cold if that fails) and clears the evacuation's keys.
func (e *engine) moveBack(ctx context.Context, f Fleet, ct *shoalv1.Container, origin string) (string, error) {
	live := ct.GetConfig()[EvacuateLiveKey] == "true" && ct.GetDesiredState() == shoalv1.DesiredState_DESIRED_STATE_RUNNING
	if ct.GetNode() != origin {
		if err := f.Move(ctx, ct, origin, live); err != nil && live {
			e.log.Warn("restore: live move back failed; moving it cold", "container", ct.GetName(), "err", err)
			live = false
			if ct, err = e.cl.Container(ct.GetName()); err != nil {
				return "", err
			}
			if ct.GetNode() != origin {
				if err := f.Move(ctx, ct, origin, false); err != nil {
					return "", fmt.Errorf("move %s back: %w", ct.GetName(), err)
				}
			}
		} else if err != nil {
			return "", fmt.Errorf("move %s back: %w", ct.GetName(), err)
		}
	}
	back, err := e.cl.Container(ct.GetName())
	if err != nil {
		return "", err
	}
	if err := e.cl.Propose(ctx, &shoalv1.ContainerUpdateCommand{Name: back.GetName(), KeepConfig: true,
		UnsetConfig: []string{EvacuateOriginKey, EvacuateLiveKey}}); err != nil {
		return "", err
	}
	entry := ct.GetName() + ":" + ct.GetNode()
	if live {
		entry += ":live"
	}
	return entry, nil
}

// waitAll waits until every named container reports the desired state;
// local ones are reconciled right away.
func (e *engine) waitAll(ctx context.Context, names []string, desired shoalv1.DesiredState) error {
	ctx, cancel := context.WithTimeout(ctx, evacuateWait)
	defer cancel()
	for _, name := range names {
		if ct, err := e.cl.Container(name); err == nil && ct.GetNode() == e.host.Name() {
			if err := e.host.Reconcile(ctx, name); err != nil {
				return err
			}
		}
		if err := WaitState(ctx, e.cl, name, desired, nil); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
}

// setConfigAndState records a change of a container's config keys, then
// its desired state.
func (e *engine) setConfigAndState(ctx context.Context, update *shoalv1.ContainerUpdateCommand, desired shoalv1.DesiredState) error {
	if err := e.cl.Propose(ctx, update); err != nil {
		return err
	}
	return e.cl.Propose(ctx, &shoalv1.ContainerDesiredStateCommand{Name: update.GetName(), DesiredState: desired})
}
