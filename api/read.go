package api

import (
	"context"
	"strconv"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// readCatchUp bounds how long a read waits to catch up with the leader:
// long enough to span an election after the leader's death (≈2-3 s here).
const readCatchUp = 5 * time.Second

// appliedKey carries, on a forwarded call, the index the forwarding member
// had caught up to: the member answering waits until it has applied as
// much, so a read forwarded to a lagging owner is not older than one the
// caller could have made where it entered.
const appliedKey = "shoal-applied-index"

// current brings this member's copy of the cluster state up to the
// leader's before a read, so a write acknowledged through any member shows
// in what a client reads next from any other (as with LXD, whose members
// all read one database). Raft followers apply committed entries a moment
// after the leader; without this a `config unset` through one member could
// still show on another. A member that cannot confirm it is current within
// readCatchUp (cut off from the leader, or a leader cut off from its
// quorum) refuses with Unavailable rather than answer from state that may
// be old: the checker in tests/jepsen caught lists on a partitioned member
// missing a snapshot acknowledged elsewhere.
func (s *Server) current(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, readCatchUp)
	defer cancel()
	if forwarded(ctx) {
		idx, ok := forwardedIndex(ctx)
		if !ok {
			return nil
		}
		if err := s.cl.WaitApplied(ctx, idx); err != nil {
			return status.Errorf(codes.Unavailable, "member %s has not caught up with the cluster's state (index %d) within %s: %v", s.node.Name(), idx, readCatchUp, err)
		}
		return nil
	}
	if err := s.cl.Sync(ctx); err != nil {
		return status.Errorf(codes.Unavailable, "member %s cannot confirm it has the cluster's current state (no leader or quorum answered within %s): %v; ask a member that reaches a quorum", s.node.Name(), readCatchUp, err)
	}
	return nil
}

// catchUp is current for what may use slightly old state (routing a call
// to a container's owner, which then reads current state itself): it
// never refuses.
func (s *Server) catchUp(ctx context.Context) {
	if forwarded(ctx) {
		return
	}
	if err := s.current(ctx); err != nil {
		s.log.Debug("read from this member's state without catching up with the leader", "err", err)
	}
}

func forwardedIndex(ctx context.Context) (uint64, bool) {
	md, _ := metadata.FromIncomingContext(ctx)
	v := md.Get(appliedKey)
	if len(v) == 0 {
		return 0, false
	}
	idx, err := strconv.ParseUint(v[0], 10, 64)
	return idx, err == nil
}
