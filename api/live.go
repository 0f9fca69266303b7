package api

import (
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// RestoreContainer is the target's side of a live move's downtime: the
// engine receives the increment and the checkpoint and restores
// (migration.Target.Restore).
func (s *Server) RestoreContainer(stream shoalv1.MigrationService_RestoreContainerServer) error {
	return toStatus(s.target.Restore(stream))
}

// ReceiveVolume is the target's side of a cold move, a copy or a refresh
// (migration.Target.Receive).
func (s *Server) ReceiveVolume(stream shoalv1.MigrationService_ReceiveVolumeServer) error {
	return toStatus(s.target.Receive(stream))
}
