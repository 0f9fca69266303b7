package api

import (
	"context"
	"strings"

	"github.com/shoal-dev/shoal/cluster/ha"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// EvacuateMember marks a member evacuated (the scheduler places nothing
// there) and moves its running containers to other members: cold (stopped,
// sent, started there), or with live, live where CRIU can and cold where it
// cannot. A container no other member can take is stopped where it is
// instead. Restore moves the moved ones back and starts the stopped ones.
// The engine plans it (migration.Source.Evacuate); each move runs on the
// container's owner, as a user's move does.
func (s *Server) EvacuateMember(ctx context.Context, req *shoalv1.EvacuateMemberRequest) (*shoalv1.EvacuateMemberResponse, error) {
	resp, err := s.source.Evacuate(ctx, s.fleet(), req.GetName(), req.GetLive())
	return resp, toStatus(err)
}

// RestoreMember brings an evacuated member back online, moves back the
// containers the evacuation moved away (live if they left live) and
// starts the ones it stopped.
func (s *Server) RestoreMember(ctx context.Context, req *shoalv1.RestoreMemberRequest) (*shoalv1.RestoreMemberResponse, error) {
	resp, err := s.source.RestoreMember(ctx, s.fleet(), req.GetName())
	return resp, toStatus(err)
}

// HealMember restarts a dead member's HA containers on the members holding
// their newest replicas now (cluster/ha.HealMember).
func (s *Server) HealMember(ctx context.Context, req *shoalv1.HealMemberRequest) (*shoalv1.HealMemberResponse, error) {
	healed, skipped, err := ha.HealMember(ctx, s.fsm, s.cl.Propose, s.node.Name(), req.GetName(), req.GetIKnowItIsFenced())
	if err != nil {
		return nil, toStatus(err)
	}
	for _, h := range healed {
		name, to, _ := strings.Cut(h, ":")
		s.bus.LifecycleDetail(s.node.Name(), "container-healed", name, req.GetName()+" -> "+to+" (shoal cluster heal)")
	}
	return &shoalv1.HealMemberResponse{Healed: healed, Skipped: skipped}, nil
}
