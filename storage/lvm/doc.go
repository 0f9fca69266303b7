// Package lvm is Shoal's LVM storage driver: a volume group (on a given
// block device, or on a loop file the driver creates and attaches) holds
// one thin pool; every volume is a thin LV formatted ext4 and mounted
// where the btrfs driver would put its subvolume; snapshots are read-only
// thin snapshots, mounted read-only; clones are writable thin snapshots
// of a volume or of a snapshot (copy-on-write, independent of their
// origin); usage is the ext4 project quota accounting of the volume's
// filesystem, and quotas (Config.ProjectQuotas, off by default) its
// project limit, which binds unprivileged writers only (the thin LV itself
// is sparse and sized once, Config.VolumeSize); Send and
// Receive use the generic tar stream of storage/internal/treetar (the dir
// driver's format), always in full.
//
// LVs carry random names; which volume or snapshot an LV is lives in its
// tags (hex-encoded names, and a sequence number that orders snapshots),
// so any valid Shoal name fits and a rename only retags. The driver owns
// the volume group and everything under its pool path:
//
//	<pool>/volumes/<enc>           mountpoints of the volumes (enc: storage.EncodeVolumeName)
//	<pool>/snapshots/<enc>/<snap>  read-only mountpoints of their snapshots
//	<pool>/.staging/<lv>           receives in progress
//
// LVM is driven through its CLI. Its unit tests need device-mapper; on a
// host without it (these machines) they run themselves inside the VM of
// tests/vm.
package lvm
