// Package zfs is Shoal's ZFS storage driver (OpenZFS 2.x, driven through
// its zfs and zpool commands). A pool is a zpool, imported or created by
// the driver on a given device or on a file vdev; the driver owns one
// root dataset in it (several drivers may share a zpool):
//
//	<root>/volumes/<c>   a filesystem per volume, mounted at <Path>/volumes/<c>
//	<root>/internal/_r*  receives in progress (destroyed by New)
//	<root>/internal/_x*  deleted volumes that clones still depend on
//
// <c> is the volume name escaped into one ZFS name component, or a digest
// when too long (the name then lives in the shoal:volume property).
// Snapshots are ZFS snapshots, mounted read-only by the driver at
// <Path>/snapshots/<volume's c>/<c> while it is open (mounts.go); clones
// are ZFS clones (of a hidden snapshot, for a clone of a live volume);
// Send and Receive are `zfs send` / `zfs send -i` and `zfs receive` (-F
// for an increment, matched to its origin by guid); quotas are refquota
// and usage is referenced. What ZFS cannot do directly is emulated:
// deleting a snapshot or volume that clones depend on hides it until the
// last clone goes, and restoring a snapshot that is not the latest copies
// its tree (a rollback would destroy the later snapshots).
//
// The driver touches nothing in the zpool outside its root dataset,
// except creating and, in Destroy, destroying a pool it was configured to
// own (Config.Device or Config.File). Its tests need the zfs kernel
// module; on a host without it (these machines) they run themselves
// inside the VM of tests/vm.
package zfs
