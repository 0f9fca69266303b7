// Package overlay is the data plane of a cluster-wide network: one VXLAN
// device per network on every member, enslaved to that network's bridge,
// whose forwarding state is programmed from the cluster's desired state and
// never learned from the wire.
//
// What it owns, on one member and for one network:
//   - the VXLAN device (unicast only: nolearning, no multicast group, one VNI,
//     a UDP port, this member's VTEP address as source) and its port flags on
//     the bridge: learning off, neigh_suppress on;
//   - the static forwarding entries: for each remote member a head-end
//     replication entry (00:00:00:00:00:00 → its VTEP), so broadcast and
//     unknown unicast reach every member once; for each remote container a
//     VXLAN entry (MAC → owner's VTEP) and a bridge entry (MAC → the VXLAN
//     port); for each container an ARP entry on the bridge (IPv4 → MAC), from
//     which the bridge answers ARP requests locally (ARP suppression);
//   - the MTU of the bridge and the VXLAN device: the underlay's minus 50;
//   - the nftables table "bridge shoal_ovl_<bridge>" that keeps what belongs
//     to one member off the overlay: the anycast gateway (every member's
//     bridge carries the same address and MAC, so ARP for it and frames from
//     it stay local) and DHCP (each member serves its own containers);
//   - the nftables table "inet shoal_vx_<bridge>" that admits VXLAN packets
//     from the members' VTEPs only (VXLAN itself authenticates nothing).
//
// The bridge itself, its gateway address, NAT and dnsmasq belong to package
// network; overlay adopts the bridge and adds the VXLAN port to it.
//
// Sync is a reconciliation: given the whole desired state (the members'
// VTEPs and every container's MAC, IPv4 and owner) it adds what is missing,
// replaces what changed and removes what is stale, so a member that missed
// updates converges in one call. A container moving between members is one
// Sync on each member: its entry now names the new owner's VTEP, and on the
// new owner the static entries are removed so the bridge forwards to the
// local port.
//
// It imports nothing of Shoal's. It works in the network namespace of the
// calling thread (a member's daemon runs in one namespace).
package overlay
