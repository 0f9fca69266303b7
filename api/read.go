package api

import (
	"context"
	"time"
)

// readCatchUp bounds how long a read waits to catch up with the leader.
const readCatchUp = 2 * time.Second

// catchUp brings this member's copy of the cluster state up to the
// leader's before a read, so a write acknowledged through any member shows
// in what a client reads next from any other (as with LXD, whose members
// all read one database). Raft followers apply committed entries a moment
// after the leader; without this a `config unset` through one member could
// still show on another. It is bounded and best effort: with no leader in
// reach the member answers from what it has.
func (s *Server) catchUp(ctx context.Context) {
	if s.cl.IsLeader() || forwarded(ctx) {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, readCatchUp)
	defer cancel()
	if err := s.cl.Sync(ctx); err != nil {
		s.log.Debug("read from this member's state without catching up with the leader", "err", err)
	}
}
