// Package btrfs is Shoal's btrfs storage driver: volumes are subvolumes,
// snapshots are read-only subvolume snapshots, clones are copy-on-write
// snapshots, Send and Receive are `btrfs send` and `btrfs receive` streams
// (incremental against a parent snapshot), and quotas are qgroup limits.
// btrfs is driven through its CLI; the package also creates, mounts and
// unmounts loop-backed btrfs pools.
//
// The driver owns everything under its pool path and nothing outside it:
//
//	<pool>/volumes/<enc>                   volume subvolumes (enc: storage.EncodeVolumeName)
//	<pool>/snapshots/<enc>/<snap>/subvol   read-only snapshots of that volume
//	<pool>/snapshots/<enc>/.recv-*/        receives in progress
//	<pool>/.staging/                       scratch space for restore
//
// Each snapshot sits one directory deeper than one might expect because
// btrfs refuses to move a read-only subvolume to another directory: a
// receive lands in a fresh .recv-* directory that is then renamed to <snap>.
package btrfs
