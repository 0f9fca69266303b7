package storage

import (
	"context"
	"fmt"
	"io"
)

// Info says what a driver can do.
type Info struct {
	// Name is the driver's name, such as "dir" or "btrfs".
	Name string
	// CoWClone is true when clones and snapshots share blocks with their
	// origin (copy-on-write) instead of being full copies.
	CoWClone bool
	// OptimizedSend is true when Send uses a native stream and honours the
	// parent snapshot, sending only the difference.
	OptimizedSend bool
	// Quotas is true when SetQuota is supported.
	Quotas bool
}

// Driver manages volumes and their read-only snapshots inside one pool.
//
// Volume names are slash-separated relative names such as "containers/c1" or
// "images/<sha256>" (see ValidateVolumeName); snapshot names are a single
// part (see ValidateSnapshotName). Methods that take names return an error
// wrapping ErrInvalidName for a bad name. Every copy a driver makes (clone,
// snapshot, send and receive) preserves ownership, modes, xattrs, device
// nodes, fifos, symlinks and hardlinks.
type Driver interface {
	// Info says what the driver can do.
	Info() Info
	// CreateVolume creates an empty volume (a directory tree root).
	// ErrExists if it exists.
	CreateVolume(ctx context.Context, vol string) error
	// CloneVolume creates volume dst as a writable copy of volume src
	// (copy-on-write where Info().CoWClone). dst must not exist.
	CloneVolume(ctx context.Context, src, dst string) error
	// CloneSnapshot creates volume dst as a writable copy of vol's snapshot snap.
	CloneSnapshot(ctx context.Context, vol, snap, dst string) error
	// DeleteVolume deletes the volume and all its snapshots; ErrNotFound if
	// the volume does not exist.
	DeleteVolume(ctx context.Context, vol string) error
	// RenameVolume gives volume vol, with its snapshots, the name dst
	// (ErrNotFound if vol does not exist, ErrExists if dst does). The
	// snapshots stay the same snapshots: an incremental stream based on
	// one, by either name, still applies.
	RenameVolume(ctx context.Context, vol, dst string) error
	// VolumeExists reports whether the volume exists.
	VolumeExists(ctx context.Context, vol string) (bool, error)
	// ListVolumes lists the volumes whose names start with prefix, sorted;
	// prefix "containers/" gives ["containers/c1", ...].
	ListVolumes(ctx context.Context, prefix string) ([]string, error)
	// Path is the host path of the volume's root directory (mounted). It is
	// stable for the life of the volume, across RestoreSnapshot and Receive.
	// It returns "" for an invalid name.
	Path(vol string) string
	// CreateSnapshot makes a read-only point-in-time copy of the volume.
	CreateSnapshot(ctx context.Context, vol, snap string) error
	// DeleteSnapshot deletes one snapshot of the volume.
	DeleteSnapshot(ctx context.Context, vol, snap string) error
	// RestoreSnapshot makes the volume's content the snapshot's; the
	// volume's Path stays the same. The caller makes sure nothing uses the
	// volume meanwhile (the container is stopped).
	RestoreSnapshot(ctx context.Context, vol, snap string) error
	// ListSnapshots lists the volume's snapshots, oldest first.
	ListSnapshots(ctx context.Context, vol string) ([]string, error)
	// SnapshotPath is the host path of the snapshot's root directory, or ""
	// for an invalid name.
	SnapshotPath(vol, snap string) string
	// Usage says how many bytes the volume uses.
	Usage(ctx context.Context, vol string) (int64, error)
	// SetQuota limits the volume to bytes; 0 removes the limit.
	// ErrNotSupported if !Info().Quotas.
	SetQuota(ctx context.Context, vol string, bytes int64) error
	// Send writes snapshot snap of vol to w. With parent != "" it sends only
	// the difference from snapshot parent (both must exist on the sender)
	// where Info().OptimizedSend; other drivers send the full content.
	Send(ctx context.Context, vol, snap, parent string, w io.Writer) error
	// Receive reads a stream produced by Send (by the same kind of driver)
	// and creates snapshot snap of vol: it creates vol from the snapshot when
	// vol does not exist, and for an incremental stream uses the parent
	// snapshot already present. After Receive, vol's content equals the
	// snapshot's (an existing vol is overwritten, keeping its Path).
	// ErrExists if the snapshot exists.
	Receive(ctx context.Context, vol, snap string, r io.Reader) error
	// Close releases the driver's resources; it leaves volumes in place.
	Close() error
}

// SnapshotRenamer is a driver that renames a snapshot in place (an optional
// ability, found by type assertion; RenameSnapshot below says
// ErrNotSupported for the others).
type SnapshotRenamer interface {
	// RenameSnapshot gives snapshot snap of vol the name dst; it keeps its
	// place in ListSnapshots' order and stays the same snapshot (a stream
	// based on it still applies). ErrNotFound if snap does not exist,
	// ErrExists if dst does.
	RenameSnapshot(ctx context.Context, vol, snap, dst string) error
}

// RenameSnapshot renames a snapshot with d's SnapshotRenamer, or says
// ErrNotSupported.
func RenameSnapshot(ctx context.Context, d Driver, vol, snap, dst string) error {
	r, ok := d.(SnapshotRenamer)
	if !ok {
		return fmt.Errorf("rename snapshot %s/%s: %s driver: %w", vol, snap, d.Info().Name, ErrNotSupported)
	}
	return r.RenameSnapshot(ctx, vol, snap, dst)
}
