package storage

import "errors"

// Error sentinels. Drivers wrap them with %w and context, so callers test
// them with errors.Is, never by matching error text.
var (
	// ErrNotFound means the volume or snapshot does not exist.
	ErrNotFound = errors.New("not found")
	// ErrExists means the volume or snapshot to create already exists.
	ErrExists = errors.New("already exists")
	// ErrNotSupported means the driver cannot do what was asked (see Info).
	ErrNotSupported = errors.New("not supported")
	// ErrInvalidName means a volume or snapshot name breaks the naming rules
	// (see ValidateVolumeName and ValidateSnapshotName).
	ErrInvalidName = errors.New("invalid name")
)
