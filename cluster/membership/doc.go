// Package membership owns Shoal's gossip layer: who is in the cluster, where
// each node can be reached (gRPC and Raft addresses), what it has free (CPU,
// memory) and its labels. It wraps hashicorp/memberlist with an encrypted
// keyring, LAN failure-detection tuning and a compact, versioned node meta.
//
// It only observes and reports. It never touches Raft or writes the FSM: it
// turns gossip into Events (Join, Update, Leave, Fail) on a buffered channel,
// and the caller (the Raft leader in package cluster) decides what to do with
// them, for example adding a voter on Join or marking a node offline after a
// grace period following Fail. memberlist callbacks never block: they record
// the fact and return; when the channel is full the event is dropped, counted,
// and the consumer is told to Resync.
package membership
