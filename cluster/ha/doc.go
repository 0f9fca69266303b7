// Package ha holds the cluster's high-availability policy: what a
// container's ha.* keys ask for (Policy), which members hold its replicas
// (ChooseReplicas: spread, never the owner, only online members that pass
// its scheduler.constraint labels), and how stale a replica is (Lag). It
// decides; the owner's node takes the snapshots and the migration engine
// sends them.
package ha
