// Package network manages the default network of a Shoal node: a Linux
// bridge with a host address, an nftables table for NAT and forwarding, and a
// supervised dnsmasq serving DHCP and DNS on that bridge only (LXD's lxdbr0).
//
// What it owns: the bridge named in Config.Name, the nftables table
// "inet shoal_<name>", the dnsmasq child bound to that bridge and the files in
// Config.StateDir. It never touches other links, tables or processes, and it
// imports nothing of Shoal's.
//
// Lifetime rules:
//   - Ensure is idempotent. It creates or adopts the bridge, (re)installs the
//     nftables table atomically and starts dnsmasq under a supervisor that
//     restarts it with backoff if it dies.
//   - dnsmasq is not tied to the daemon's life (no Pdeathsig, own session):
//     if shoald is killed, containers keep their DHCP and DNS. On the next
//     Ensure any dnsmasq still serving this bridge (found by its command line)
//     is stopped and replaced by a supervised one; the lease file is kept, so
//     leases survive. There is never more than one dnsmasq per bridge.
//   - Close stops the supervisor and dnsmasq but leaves the bridge and the
//     nftables table, so a daemon restart does not cut containers off.
//   - Delete removes everything: dnsmasq, nftables table, bridge, state files.
package network
