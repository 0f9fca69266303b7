package main

import (
	"context"
	"testing"
	"time"
)

// TestDryRunSmall runs the dry run at a small size (50 members, 20,000
// placements) through a real three-member Raft cluster: Run's check must
// find every container recorded exactly once and the same on every
// member, none on a member that was not online (ten go offline half-way),
// every constraint and distinct-members group honoured and no member
// oversubscribed; the restored snapshot holds them all. It asserts no
// timing.
func TestDryRunSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("a 20,000-entry Raft run")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cfg := Config{Members: 50, Placements: 20_000, Clients: 32, Floor: 100, Dir: t.TempDir()}
	res, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.WentOffline == 0 {
		t.Fatal("no member went offline half-way: the liveness check checked nothing")
	}
	if res.PerMemberMin <= 0 {
		t.Fatalf("an online member received nothing (%d-%d per member)", res.PerMemberMin, res.PerMemberMax)
	}
	t.Logf("%d placements in %s (%d placed again), %d members set offline half-way, %d-%d per member",
		res.Placements, res.Took, res.Retries, res.WentOffline, res.PerMemberMin, res.PerMemberMax)
}
