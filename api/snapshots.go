package api

import (
	"context"
	"log/slog"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/internal/config"
	"github.com/shoal-dev/shoal/internal/snapsched"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// Scheduled snapshots and expiry run on each container's owner: it holds
// the volume, so a snapshot is one local call and one Raft entry, and a
// member that is down takes none (as LXD, where each member snapshots its
// own instances). The leader would have to forward every one.

// snapshotNameAndExpiry is the name (the request's, else from
// snapshots.pattern) and the expiry time (the request's expiry, else
// snapshots.expiry, none with no_expiry; 0: never) of a new snapshot of
// ct taken at now.
func snapshotNameAndExpiry(ct *shoalv1.Container, req *shoalv1.CreateSnapshotRequest, now time.Time) (string, int64, error) {
	cfg := cluster.ExpandedConfig(ct)
	name := req.GetName()
	if name == "" {
		taken := map[string]bool{}
		for _, sn := range ct.GetSnapshots() {
			taken[sn.GetName()] = true
		}
		n, err := snapsched.Name(cfg["snapshots.pattern"], now, func(s string) bool { return taken[s] })
		if err != nil {
			return "", 0, invalid("snapshots.pattern", err.Error())
		}
		name = n
	}
	if err := config.ValidateSnapshotName("name", name); err != nil {
		return "", 0, toStatus(err)
	}
	expr, field := cfg["snapshots.expiry"], "snapshots.expiry"
	if req.GetExpiry() != "" {
		expr, field = req.GetExpiry(), "expiry"
	} else if req.GetNoExpiry() {
		expr = ""
	}
	expiry, err := snapsched.ParseExpiry(expr)
	if err != nil {
		return "", 0, status.Errorf(codes.InvalidArgument, "%s: %q is not valid: %v (want %s)", field, expr, unprefixed(err), snapsched.ExpiryHelp)
	}
	if expiry == nil {
		return name, 0, nil
	}
	return name, expiry(now).UnixNano(), nil
}

// unprefixed is a snapsched error without its sentinel's "invalid: ".
func unprefixed(err error) string {
	msg, p := err.Error(), snapsched.ErrInvalid.Error()+": "
	if len(msg) > len(p) && msg[:len(p)] == p {
		return msg[len(p):]
	}
	return msg
}

// RunSnapshots takes the scheduled snapshots of the containers this member
// owns, at the start of every minute their snapshots.schedule matches
// (local time; a stopped one only with snapshots.schedule.stopped), and
// every pruneEvery deletes their snapshots whose expiry has passed.
func (s *Server) RunSnapshots(ctx context.Context, pruneEvery time.Duration) {
	log := s.log.With("component", "snapshots")
	if pruneEvery <= 0 {
		pruneEvery = time.Minute
	}
	go func() {
		tick := time.NewTicker(pruneEvery)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-tick.C:
				s.pruneSnapshots(ctx, now, log)
			}
		}
	}()
	for {
		next := time.Now().Truncate(time.Minute).Add(time.Minute)
		t := time.NewTimer(time.Until(next))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		s.scheduledSnapshots(ctx, next, log)
	}
}

// scheduledSnapshots takes the snapshots due in minute.
func (s *Server) scheduledSnapshots(ctx context.Context, minute time.Time, log *slog.Logger) {
	for _, ct := range s.fsm.Containers() {
		if ct.GetNode() != s.node.Name() {
			continue
		}
		cfg := cluster.ExpandedConfig(ct)
		sched, err := snapsched.ParseSchedule(cfg["snapshots.schedule"])
		if err != nil || !sched.Matches(minute) {
			continue
		}
		if !config.Bool(cfg, "snapshots.schedule.stopped") && s.node.State(ctx, ct, false).GetStatus() != "Running" {
			continue
		}
		resp, err := s.CreateSnapshot(ctx, &shoalv1.CreateSnapshotRequest{Container: ct.GetName()})
		if err != nil {
			log.Warn("scheduled snapshot", "container", ct.GetName(), "err", err)
			continue
		}
		log.Info("scheduled snapshot", "container", ct.GetName(), "snapshot", resp.GetSnapshot().GetName())
	}
}

// pruneSnapshots deletes the expired snapshots of the containers this
// member owns.
func (s *Server) pruneSnapshots(ctx context.Context, now time.Time, log *slog.Logger) {
	for _, ct := range s.fsm.Containers() {
		if ct.GetNode() != s.node.Name() {
			continue
		}
		for _, sn := range ct.GetSnapshots() {
			if exp := sn.GetExpiresAtUnixNano(); exp == 0 || exp > now.UnixNano() {
				continue
			}
			if _, err := s.DeleteSnapshot(ctx, &shoalv1.DeleteSnapshotRequest{Container: ct.GetName(), Name: sn.GetName()}); err != nil {
				log.Warn("delete expired snapshot", "container", ct.GetName(), "snapshot", sn.GetName(), "err", err)
				continue
			}
			log.Info("deleted expired snapshot", "container", ct.GetName(), "snapshot", sn.GetName())
		}
	}
}
