package api

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/api/operations"
	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/cluster/ha"
	"github.com/shoal-dev/shoal/internal/config"
	"github.com/shoal-dev/shoal/migration"
	"github.com/shoal-dev/shoal/network"
	"github.com/shoal-dev/shoal/network/ipam"
	"github.com/shoal-dev/shoal/network/overlay"
	"github.com/shoal-dev/shoal/node"
	"github.com/shoal-dev/shoal/node/backup"
	"github.com/shoal-dev/shoal/node/images"
	"github.com/shoal-dev/shoal/node/images/simplestreams"
	"github.com/shoal-dev/shoal/node/runtime"
	"github.com/shoal-dev/shoal/scheduler"
	"github.com/shoal-dev/shoal/storage"
)

// errOwnerOffline marks a wait on a member the cluster marked offline.
var errOwnerOffline = errors.New("member offline")

// codeTable maps our sentinel errors to gRPC codes. It is the only place
// where that mapping lives.
var codeTable = []struct {
	err  error
	code codes.Code
}{
	{config.ErrInvalid, codes.InvalidArgument},
	{images.ErrInvalid, codes.InvalidArgument},
	{backup.ErrInvalid, codes.InvalidArgument},
	{backup.ErrUnsupported, codes.FailedPrecondition},
	{node.ErrInvalidPool, codes.InvalidArgument},
	{node.ErrInvalidDevice, codes.InvalidArgument},
	{node.ErrInvalidExec, codes.InvalidArgument},
	{runtime.ErrPathEscape, codes.InvalidArgument},
	{runtime.ErrInvalid, codes.InvalidArgument},
	{cluster.ErrNotFound, codes.NotFound},
	{storage.ErrNotFound, codes.NotFound},
	{runtime.ErrNotFound, codes.NotFound},
	{images.ErrNotFound, codes.NotFound},
	{node.ErrNotFound, codes.NotFound},
	{operations.ErrNotFound, codes.NotFound},
	{cluster.ErrExists, codes.AlreadyExists},
	{storage.ErrExists, codes.AlreadyExists},
	{images.ErrAmbiguous, codes.InvalidArgument},
	{simplestreams.ErrNotFound, codes.NotFound},
	{simplestreams.ErrInvalid, codes.FailedPrecondition},
	{simplestreams.ErrStalled, codes.Unavailable},
	{cluster.ErrInUse, codes.FailedPrecondition},
	{runtime.ErrNotRunning, codes.FailedPrecondition},
	{runtime.ErrUnenforceable, codes.FailedPrecondition},
	{runtime.ErrDeviceSource, codes.FailedPrecondition},
	{node.ErrConflict, codes.FailedPrecondition},
	{storage.ErrNotSupported, codes.Unimplemented},
	{cluster.ErrNotLeader, codes.Unavailable},
	{errOwnerOffline, codes.Unavailable},
	{cluster.ErrUnreachable, codes.Unavailable},
	{cluster.ErrPlacementRefused, codes.Aborted},
	{cluster.ErrStale, codes.Aborted},
	{ha.ErrUnknownMember, codes.NotFound},
	{ha.ErrNotDead, codes.FailedPrecondition},
	{scheduler.ErrNoFit, codes.ResourceExhausted},
	{scheduler.ErrUnknownNode, codes.NotFound},
	{scheduler.ErrInvalid, codes.InvalidArgument},
	{cluster.ErrTokenInvalid, codes.Unauthenticated},
	{cluster.ErrRevoked, codes.PermissionDenied},
	{cluster.ErrInvalidCommand, codes.InvalidArgument},
	{migration.ErrCorrupt, codes.DataLoss},
	{migration.ErrAborted, codes.Aborted},
	{migration.ErrUnsupported, codes.FailedPrecondition},
	{migration.ErrConflict, codes.FailedPrecondition},
	{migration.ErrBaseMissing, codes.FailedPrecondition},
	{migration.ErrInvalid, codes.InvalidArgument},
	{migration.ErrExists, codes.AlreadyExists},
	{ipam.ErrInvalid, codes.InvalidArgument},
	{ipam.ErrOutOfRange, codes.InvalidArgument},
	{ipam.ErrExhausted, codes.ResourceExhausted},
	{overlay.ErrInvalidConfig, codes.InvalidArgument},
	{overlay.ErrMTUTooLarge, codes.InvalidArgument},
	{overlay.ErrNoUnderlay, codes.FailedPrecondition},
	{network.ErrInvalidConfig, codes.InvalidArgument},
	{context.Canceled, codes.Canceled},
	{context.DeadlineExceeded, codes.DeadlineExceeded},
}

// toStatus converts an error to a gRPC status error. Errors that already are
// status errors pass through.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	for _, e := range codeTable {
		if errors.Is(err, e.err) {
			return status.Error(e.code, err.Error())
		}
	}
	return status.Error(codes.Internal, err.Error())
}

func invalid(field, msg string) error {
	return status.Error(codes.InvalidArgument, field+": "+msg)
}

func precondition(msg string) error {
	return status.Error(codes.FailedPrecondition, msg)
}

func init() { operations.ToStatus = toStatus }

func notFound(msg string) error {
	return status.Error(codes.NotFound, msg)
}

// about prefixes a status error's message with what it is about, keeping
// its code.
func about(what string, err error) error {
	if err == nil {
		return nil
	}
	st := status.Convert(toStatus(err))
	return status.Error(st.Code(), what+": "+st.Message())
}

func alreadyExists(msg string) error {
	return status.Error(codes.AlreadyExists, msg)
}
