// Package backup reads and writes container backup tarballs in LXD's
// layout:
//
//	backup/index.yaml               name, backend, pool, optimized, snapshots, config.container (the record)
//	backup/snapshots/<snap>/...     each snapshot's root filesystem, oldest first
//	backup/container/...            the container's root filesystem
//
// or, optimized, the pool driver's own streams in the same order:
// backup/snapshots/<snap>.bin (each incremental on the one before) and
// backup/container.bin (incremental on the last snapshot). The tarball is
// gzip-compressed or plain.
//
// It owns the format only: what goes in, in which order, and the checks on
// a tarball from outside (index first, parts in the index's order, names,
// traversal, truncation). Taking snapshots, driving the storage driver and
// recording the container are node's (node/backup.go) and api's.
package backup
