package api

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/internal/config"
	"github.com/shoal-dev/shoal/migration"
	"github.com/shoal-dev/shoal/network/ipam"
	"github.com/shoal-dev/shoal/node/runtime"
	"github.com/shoal-dev/shoal/storage"
)

func TestToStatus(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want codes.Code
	}{
		{config.ValidateName("name", "1x"), codes.InvalidArgument},
		{fmt.Errorf("container %q: %w", "c", cluster.ErrNotFound), codes.NotFound},
		{fmt.Errorf("wrap: %w", storage.ErrExists), codes.AlreadyExists},
		{fmt.Errorf("container %q: nic eth0: %w", "c", ipam.ErrExhausted), codes.ResourceExhausted},
		{fmt.Errorf("ipv4.address: %w", ipam.ErrOutOfRange), codes.InvalidArgument},
		{fmt.Errorf("exec: %w", runtime.ErrNotRunning), codes.FailedPrecondition},
		{fmt.Errorf("pull: %w", runtime.ErrPathEscape), codes.InvalidArgument},
		{fmt.Errorf("limits.disk.priority: %w", runtime.ErrUnenforceable), codes.FailedPrecondition},
		{fmt.Errorf("renew: %w", cluster.ErrRevoked), codes.PermissionDenied},
		{cluster.ErrNotLeader, codes.Unavailable},
		{fmt.Errorf("move: %w", migration.ErrCorrupt), codes.DataLoss},
		{fmt.Errorf("restore: %w", migration.ErrAborted), codes.Aborted},
		{fmt.Errorf("postcopy: %w", migration.ErrUnsupported), codes.FailedPrecondition},
		{fmt.Errorf("refresh: %w", migration.ErrConflict), codes.FailedPrecondition},
		{fmt.Errorf("header: %w", migration.ErrInvalid), codes.InvalidArgument},
		{fmt.Errorf("copy: %w", migration.ErrExists), codes.AlreadyExists},
		{context.Canceled, codes.Canceled},
		{errors.New("disk on fire"), codes.Internal},
		{status.Error(codes.PermissionDenied, "no"), codes.PermissionDenied},
	} {
		if got := status.Code(toStatus(tc.err)); got != tc.want {
			t.Errorf("toStatus(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
	if toStatus(nil) != nil {
		t.Error("toStatus(nil) != nil")
	}
}
