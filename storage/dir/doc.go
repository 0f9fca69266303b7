// Package dir is Shoal's plain-directory storage driver, for hosts without a
// copy-on-write filesystem and for tests. Volumes and snapshots are
// directories; clones and snapshots are full copies (`cp -a
// --reflink=auto`, so blocks are shared where the filesystem can reflink);
// Send and Receive move a snapshot as a tar stream. Snapshots are not
// enforced read-only: nothing but the driver should write to them. It has no
// quotas and no incremental send: Send with a parent still sends the full
// snapshot, and Receive takes it as such.
//
// The driver owns everything under its pool path and nothing outside it:
//
//	<pool>/volumes/<enc>                  volumes (enc: storage.EncodeVolumeName)
//	<pool>/snapshots/<enc>/<snap>         snapshots of that volume
//	<pool>/snapshots/<enc>/.order         snapshot names in creation order
//	<pool>/.staging/                      scratch space for copies and receives
package dir
