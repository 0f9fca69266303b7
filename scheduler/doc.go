// Package scheduler decides which node runs a new container. It owns
// placement only: filters (node status, --target, label constraints,
// config keys the node's host cannot enforce, hard group cap, free CPU and
// memory) reject nodes with a recorded reason, a scorer (spread or
// binpack) ranks the rest, and ties go to the lowest node name, so the
// same input always gives the same answer.
//
// It is pure: no I/O, no clocks, no randomness, and it imports nothing of
// Shoal's. The cluster package adapts its FSM records to [Node] and
// [Container], builds a [Snapshot], calls [Place] on the leader, and calls
// [Check] in the FSM apply path to refuse a placement that no longer fits
// (nomad's plan applier), followed by [Snapshot.Add]. Check uses integers
// only, so every FSM reaches the same verdict.
package scheduler
