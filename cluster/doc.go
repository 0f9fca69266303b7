// Package cluster owns Shoal's desired state: the Raft log (hashicorp/raft with
// raft-boltdb), the deterministic FSM that applies typed commands to it, and
// the read accessors every other part of the daemon uses.
//
// It never touches the host: containers, volumes and bridges belong to the
// node reconciler, which watches the FSM through Subscribe.
package cluster
