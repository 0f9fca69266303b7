// Command c1m is Shoal's C1M dry run (issue 15): a real three-member Raft
// cluster (hashicorp/raft over loopback TCP, raft-boltdb logs, in one
// process) with thousands of simulated members — node records with
// capacities and labels, no daemons — receives up to a million placements
// with label constraints and spread groups, sent by concurrent clients
// through every member, each placed as a create places it (the scheduler
// over the proposer's FSM view, the leader's admission, the FSM's
// re-check). No container is made. It prints placements per second beside
// the floor measured in the same run (no-op commands through the same
// clients and members), the Raft log's size, the FSM's memory, and the
// time to snapshot and restore that FSM; then it checks every placement
// (exactly once, on a member that was online, within its constraints,
// hard group caps and the member's capacity).
//
//	go run ./bench/c1m                                   # 5,000 members, 1,000,000 placements
//	go run ./bench/c1m -members 50 -placements 20000     # a small run
//
// The test in this directory runs the small size as a normal test and
// asserts correctness only, never timings.
package main
