package api

import (
	"bufio"
	"context"

	"github.com/shoal-dev/shoal/node/runtime"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// DeleteFile removes a file, symlink or empty directory in a container
// (on its owner: containerField).
func (s *Server) DeleteFile(ctx context.Context, req *shoalv1.DeleteFileRequest) (*shoalv1.DeleteFileResponse, error) {
	if req.GetPath() == "" || req.GetPath()[0] != '/' {
		return nil, invalid("path", "an absolute path inside the container is required")
	}
	if err := s.node.DeleteFile(ctx, req.GetName(), req.GetPath()); err != nil {
		return nil, toStatus(err)
	}
	return &shoalv1.DeleteFileResponse{}, nil
}

// pullArchive answers PullFile with archive set: a header describing the
// path, then the tree as a tar stream in data messages.
func (s *Server) pullArchive(req *shoalv1.PullFileRequest, stream shoalv1.ContainerService_PullFileServer) error {
	info := func(ti runtime.TreeInfo) error {
		h := &shoalv1.FileHeader{Name: req.GetName(), Path: req.GetPath(), Mode: uint32(ti.Mode), Uid: int32(ti.UID), Gid: int32(ti.GID), Size: -1}
		return stream.Send(&shoalv1.PullFileResponse{Msg: &shoalv1.PullFileResponse_Header{Header: h}})
	}
	w := bufio.NewWriterSize(streamWriter(func(b []byte) error {
		return stream.Send(&shoalv1.PullFileResponse{Msg: &shoalv1.PullFileResponse_Data{Data: b}})
	}), chunkSize)
	if err := s.node.PullTree(stream.Context(), req.GetName(), req.GetPath(), w, info); err != nil {
		return toStatus(err)
	}
	return w.Flush()
}
