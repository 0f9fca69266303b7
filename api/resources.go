package api

import (
	"context"
	"fmt"

	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// GetResources describes a member's hardware. A call naming another
// member is forwarded to it (targetField); an unknown member is NotFound.
func (s *Server) GetResources(ctx context.Context, req *shoalv1.GetResourcesRequest) (*shoalv1.GetResourcesResponse, error) {
	if t := req.GetTarget(); t != "" && t != s.node.Name() {
		if _, err := s.fsm.Node(t); err != nil {
			return nil, notFound(fmt.Sprintf("target: member %q not found", t))
		}
		// A known member that was not forwarded to: this member has no
		// peers (it is alone) or the call was forwarded here already.
		return nil, precondition(fmt.Sprintf("target: member %q cannot be reached from %s", t, s.node.Name()))
	}
	r, err := s.node.Resources(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	return r, nil
}
