package cluster

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// CommandType identifies a replicated command. Numbers are append-only: a
// number is never reused for another command, even after one is removed.
type CommandType byte

// The replicated commands.
const (
	CmdContainerCreate       CommandType = 1
	CmdContainerUpdate       CommandType = 2
	CmdContainerDesiredState CommandType = 3
	CmdContainerDelete       CommandType = 4
	CmdContainerStatus       CommandType = 5
	CmdSnapshotCreate        CommandType = 6
	CmdSnapshotDelete        CommandType = 7
	CmdImageAdd              CommandType = 8
	CmdImageDelete           CommandType = 9
	CmdAliasSet              CommandType = 10
	CmdAliasDelete           CommandType = 11
	CmdPoolCreate            CommandType = 12
	CmdNetworkCreate         CommandType = 13
	CmdNodeUpsert            CommandType = 14
	CmdClusterInit           CommandType = 15
	CmdTokenAdd              CommandType = 16
	CmdTokenRedeem           CommandType = 17
	CmdNodeRemove            CommandType = 18
	CmdContainerMove         CommandType = 19
	CmdClusterConfig         CommandType = 20
	CmdTokenRevoke           CommandType = 21
	CmdTrustAdd              CommandType = 22
	CmdTrustRevoke           CommandType = 23
	CmdNetworkDelete         CommandType = 24
	CmdContainerNicAdd       CommandType = 25
	CmdContainerNicRemove    CommandType = 26
	CmdContainerReplicaSet   CommandType = 27
	CmdContainerReplicaDrop  CommandType = 28
	CmdContainerHeal         CommandType = 29
	CmdProfileCreate         CommandType = 30
	CmdProfileUpdate         CommandType = 31
	CmdProfileRename         CommandType = 32
	CmdProfileDelete         CommandType = 33
	CmdVolumeCreate          CommandType = 34
	CmdVolumeUpdate          CommandType = 35
	CmdVolumeDelete          CommandType = 36
	CmdVolumeRename          CommandType = 37
	CmdVolumeMove            CommandType = 38
	CmdVolumeSnapshotCreate  CommandType = 39
	CmdVolumeSnapshotDelete  CommandType = 40
	CmdContainerRename       CommandType = 41
	CmdSnapshotRename        CommandType = 42
	CmdContainerReplace      CommandType = 50
	CmdBatch                 CommandType = 51
)

// ErrUnknownCommand is returned for a command type this version does not know.
var ErrUnknownCommand = errors.New("unknown command type")

// newPayload returns an empty payload message for t.
func newPayload(t CommandType) (proto.Message, error) {
	switch t {
	case CmdContainerCreate:
		return &shoalv1.ContainerCreateCommand{}, nil
	case CmdContainerUpdate:
		return &shoalv1.ContainerUpdateCommand{}, nil
	case CmdContainerDesiredState:
		return &shoalv1.ContainerDesiredStateCommand{}, nil
	case CmdContainerDelete:
		return &shoalv1.ContainerDeleteCommand{}, nil
	case CmdContainerStatus:
		return &shoalv1.ContainerStatusCommand{}, nil
	case CmdSnapshotCreate:
		return &shoalv1.SnapshotCreateCommand{}, nil
	case CmdSnapshotDelete:
		return &shoalv1.SnapshotDeleteCommand{}, nil
	case CmdImageAdd:
		return &shoalv1.ImageAddCommand{}, nil
	case CmdImageDelete:
		return &shoalv1.ImageDeleteCommand{}, nil
	case CmdAliasSet:
		return &shoalv1.AliasSetCommand{}, nil
	case CmdAliasDelete:
		return &shoalv1.AliasDeleteCommand{}, nil
	case CmdPoolCreate:
		return &shoalv1.PoolCreateCommand{}, nil
	case CmdNetworkCreate:
		return &shoalv1.NetworkCreateCommand{}, nil
	case CmdNetworkDelete:
		return &shoalv1.NetworkDeleteCommand{}, nil
	case CmdContainerNicAdd:
		return &shoalv1.ContainerNicAddCommand{}, nil
	case CmdContainerNicRemove:
		return &shoalv1.ContainerNicRemoveCommand{}, nil
	case CmdContainerReplicaSet:
		return &shoalv1.ContainerReplicaSetCommand{}, nil
	case CmdContainerReplicaDrop:
		return &shoalv1.ContainerReplicaDropCommand{}, nil
	case CmdContainerHeal:
		return &shoalv1.ContainerHealCommand{}, nil
	case CmdProfileCreate:
		return &shoalv1.ProfileCreateCommand{}, nil
	case CmdProfileUpdate:
		return &shoalv1.ProfileUpdateCommand{}, nil
	case CmdProfileRename:
		return &shoalv1.ProfileRenameCommand{}, nil
	case CmdProfileDelete:
		return &shoalv1.ProfileDeleteCommand{}, nil
	case CmdVolumeCreate:
		return &shoalv1.VolumeCreateCommand{}, nil
	case CmdVolumeUpdate:
		return &shoalv1.VolumeUpdateCommand{}, nil
	case CmdVolumeDelete:
		return &shoalv1.VolumeDeleteCommand{}, nil
	case CmdVolumeRename:
		return &shoalv1.VolumeRenameCommand{}, nil
	case CmdVolumeMove:
		return &shoalv1.VolumeMoveCommand{}, nil
	case CmdVolumeSnapshotCreate:
		return &shoalv1.VolumeSnapshotCreateCommand{}, nil
	case CmdVolumeSnapshotDelete:
		return &shoalv1.VolumeSnapshotDeleteCommand{}, nil
	case CmdContainerReplace:
		return &shoalv1.ContainerReplaceCommand{}, nil
	case CmdBatch:
		return &shoalv1.CommandBatch{}, nil
	case CmdContainerRename:
		return &shoalv1.ContainerRenameCommand{}, nil
	case CmdSnapshotRename:
		return &shoalv1.SnapshotRenameCommand{}, nil
	case CmdNodeUpsert:
		return &shoalv1.NodeUpsertCommand{}, nil
	case CmdClusterInit:
		return &shoalv1.ClusterInitCommand{}, nil
	case CmdTokenAdd:
		return &shoalv1.TokenAddCommand{}, nil
	case CmdTokenRedeem:
		return &shoalv1.TokenRedeemCommand{}, nil
	case CmdNodeRemove:
		return &shoalv1.NodeRemoveCommand{}, nil
	case CmdContainerMove:
		return &shoalv1.ContainerMoveCommand{}, nil
	case CmdClusterConfig:
		return &shoalv1.ClusterConfigCommand{}, nil
	case CmdTokenRevoke:
		return &shoalv1.TokenRevokeCommand{}, nil
	case CmdTrustAdd:
		return &shoalv1.TrustAddCommand{}, nil
	case CmdTrustRevoke:
		return &shoalv1.TrustRevokeCommand{}, nil
	}
	return nil, fmt.Errorf("%w %d", ErrUnknownCommand, t)
}

// typeOf returns the command type of a payload message.
func typeOf(m proto.Message) (CommandType, error) {
	switch m.(type) {
	case *shoalv1.ContainerCreateCommand:
		return CmdContainerCreate, nil
	case *shoalv1.ContainerUpdateCommand:
		return CmdContainerUpdate, nil
	case *shoalv1.ContainerDesiredStateCommand:
		return CmdContainerDesiredState, nil
	case *shoalv1.ContainerDeleteCommand:
		return CmdContainerDelete, nil
	case *shoalv1.ContainerStatusCommand:
		return CmdContainerStatus, nil
	case *shoalv1.SnapshotCreateCommand:
		return CmdSnapshotCreate, nil
	case *shoalv1.SnapshotDeleteCommand:
		return CmdSnapshotDelete, nil
	case *shoalv1.ImageAddCommand:
		return CmdImageAdd, nil
	case *shoalv1.ImageDeleteCommand:
		return CmdImageDelete, nil
	case *shoalv1.AliasSetCommand:
		return CmdAliasSet, nil
	case *shoalv1.AliasDeleteCommand:
		return CmdAliasDelete, nil
	case *shoalv1.PoolCreateCommand:
		return CmdPoolCreate, nil
	case *shoalv1.NetworkCreateCommand:
		return CmdNetworkCreate, nil
	case *shoalv1.NetworkDeleteCommand:
		return CmdNetworkDelete, nil
	case *shoalv1.ContainerNicAddCommand:
		return CmdContainerNicAdd, nil
	case *shoalv1.ContainerNicRemoveCommand:
		return CmdContainerNicRemove, nil
	case *shoalv1.ContainerReplicaSetCommand:
		return CmdContainerReplicaSet, nil
	case *shoalv1.ContainerReplicaDropCommand:
		return CmdContainerReplicaDrop, nil
	case *shoalv1.ContainerHealCommand:
		return CmdContainerHeal, nil
	case *shoalv1.ProfileCreateCommand:
		return CmdProfileCreate, nil
	case *shoalv1.ProfileUpdateCommand:
		return CmdProfileUpdate, nil
	case *shoalv1.ProfileRenameCommand:
		return CmdProfileRename, nil
	case *shoalv1.ProfileDeleteCommand:
		return CmdProfileDelete, nil
	case *shoalv1.VolumeCreateCommand:
		return CmdVolumeCreate, nil
	case *shoalv1.VolumeUpdateCommand:
		return CmdVolumeUpdate, nil
	case *shoalv1.VolumeDeleteCommand:
		return CmdVolumeDelete, nil
	case *shoalv1.VolumeRenameCommand:
		return CmdVolumeRename, nil
	case *shoalv1.VolumeMoveCommand:
		return CmdVolumeMove, nil
	case *shoalv1.VolumeSnapshotCreateCommand:
		return CmdVolumeSnapshotCreate, nil
	case *shoalv1.VolumeSnapshotDeleteCommand:
		return CmdVolumeSnapshotDelete, nil
	case *shoalv1.ContainerReplaceCommand:
		return CmdContainerReplace, nil
	case *shoalv1.CommandBatch:
		return CmdBatch, nil
	case *shoalv1.ContainerRenameCommand:
		return CmdContainerRename, nil
	case *shoalv1.SnapshotRenameCommand:
		return CmdSnapshotRename, nil
	case *shoalv1.NodeUpsertCommand:
		return CmdNodeUpsert, nil
	case *shoalv1.ClusterInitCommand:
		return CmdClusterInit, nil
	case *shoalv1.TokenAddCommand:
		return CmdTokenAdd, nil
	case *shoalv1.TokenRedeemCommand:
		return CmdTokenRedeem, nil
	case *shoalv1.NodeRemoveCommand:
		return CmdNodeRemove, nil
	case *shoalv1.ContainerMoveCommand:
		return CmdContainerMove, nil
	case *shoalv1.ClusterConfigCommand:
		return CmdClusterConfig, nil
	case *shoalv1.TokenRevokeCommand:
		return CmdTokenRevoke, nil
	case *shoalv1.TrustAddCommand:
		return CmdTrustAdd, nil
	case *shoalv1.TrustRevokeCommand:
		return CmdTrustRevoke, nil
	}
	return 0, fmt.Errorf("%w: %T", ErrUnknownCommand, m)
}

// Encode serialises a command payload into a Raft log entry: one type byte,
// then the protobuf payload.
func Encode(m proto.Message) ([]byte, error) {
	t, err := typeOf(m)
	if err != nil {
		return nil, err
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode command %d: %w", t, err)
	}
	return append([]byte{byte(t)}, b...), nil
}

// Decode parses a Raft log entry produced by Encode.
func Decode(data []byte) (CommandType, proto.Message, error) {
	if len(data) == 0 {
		return 0, nil, errors.New("decode command: empty entry")
	}
	t := CommandType(data[0])
	m, err := newPayload(t)
	if err != nil {
		return t, nil, err
	}
	if err := proto.Unmarshal(data[1:], m); err != nil {
		return t, nil, fmt.Errorf("decode command %d: %w", t, err)
	}
	return t, m, nil
}
