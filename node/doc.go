// Package node is the host side of a Shoal member: the reconciler that makes
// this host's LXC containers, storage volumes and bridge match the desired
// state in the cluster FSM, and the imperative host services the API needs
// (exec, files, snapshots, copies, image builds and publishing, and both
// sides of a live move: checkpoint and hold on the source, restore, commit
// or abort on the target; migrate.go).
//
// Only this package touches the host; it reads desired state from cluster
// and writes back only observed status and records of what it created.
package node
