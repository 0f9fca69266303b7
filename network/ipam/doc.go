// Package ipam is the arithmetic of a network's IPv4 addresses: which
// addresses of a subnet containers may have (not the network address, the
// broadcast address or the gateway), whether a static one is acceptable,
// and the next free one.
//
// It holds no state and does no I/O: the cluster's FSM keeps the addresses
// in use and calls Pool.Next inside the Raft entry that records a NIC, so
// every replica allocates the same address and none is given twice, even
// across a leader failover. It imports nothing of Shoal's.
package ipam
