// Package storage defines the contract between Shoal and the host's storage:
// the Driver interface, its Info capability struct, the error sentinels every
// driver wraps, and the volume and snapshot naming rules.
//
// Implementations live in subpackages (storage/dir, storage/btrfs,
// storage/lvm); the
// conformance suite they all pass is storage/storagetest. This package owns
// only host-side storage mechanics: it never reads cluster state and imports
// nothing else of Shoal's.
package storage
