// Package netns simulates several hosts on one machine for multi-node tests:
// an Underlay is a Linux bridge in the root network namespace, and each Host
// is a named network namespace (plus a mount namespace of its own) joined to
// that bridge by a veth pair. Processes started on a Host see only its eth0
// and lo, so cutting a link or partitioning the underlay is real.
//
// What it owns: every name it creates carries a prefix and the underlay's
// random id, so nothing else is ever touched:
//
//	bridge   "shu"+id           (root netns, no address, IPv6 off)
//	veth     "shv"+id+NN        (host side, on the bridge; the peer is eth0 in the ns)
//	netns    "shn-<name>-"+id   (/run/netns)
//	marker   /run/shoal-netns/<id>/owner  (pid and start time of the owning test)
//
// Addressing: each underlay takes a free 10.250.X.0/24 (X random, never one
// that overlaps a root-netns route); host N gets .N/24 on its eth0 and no
// default route, so it cannot reach anything outside the underlay. The bridge
// has no address: the root namespace has no route into the underlay and the
// machine's own network is never involved. The test process reaches a host
// with Host.Dial and Host.Listen, which create the socket inside the host's
// netns (setns on a locked thread).
//
// How commands enter a host: at AddHost a small holder process (sleep) is
// started in the netns inside a new mount namespace (slave propagation, so
// the machine's mounts still appear) where /sys is a fresh sysfs showing the
// netns's own interfaces, with /sys/fs/cgroup and any other /sys submounts
// carried over (LXC needs both). Host.Command wraps the command in
//
//	nsenter --net=/run/netns/NS --mount=/proc/HOLDER/ns/mnt --wd=. -- CMD...
//
// so every process of a host shares one netns and one mount view, as on a real
// machine: mounts a daemon makes (a btrfs pool) survive its restart and are
// not visible in the root mount namespace; they are dropped when the host is
// torn down. LXC's abstract command socket is per netns, so an LXC started on
// a host is managed from that host only.
//
// Cut and Partition are nftables rules inside the host's own netns (tables
// "inet shn_cut" and "inet shn_part", hooks input/output at raw priority,
// policy drop for the matched packets): packets are silently dropped, links
// stay up, processes keep running, existing connections stall and resume after
// Heal. No rule is ever added to the root namespace; the rules vanish with
// the netns.
//
// Entering only the netns (setns, nsenter --net) is not enough: /sys would
// still show the root netns, and LXC then fails to attach a container's veth
// to a bridge made inside the host ("bridge interface doesn't exist").
//
// Where br_netfilter is loaded (bridge-nf-call-iptables=1, as on the dev
// machines), frames crossing the underlay bridge also pass the root netns's
// forward hook: a drop-policy forward chain there would break the underlay.
//
// Teardown runs from t.Cleanup even when the test fails: processes started
// with Start (their whole process group), any other process still in the
// netns, the holder, the veth, the netns, the bridge and the marker.
// CleanLeftovers removes what a killed test binary left behind; it never
// touches an underlay whose owner is still alive.
package netns
