package api

import (
	"errors"
	"io"
	"os"
	"sync"

	"github.com/shoal-dev/shoal/node/runtime"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// chunkSize is the payload size of streamed data messages.
const chunkSize = 64 << 10

// Exec runs a command in a container. The first message must be a start;
// then stdin, resize, signal and stdin_eof messages may follow. The last
// response carries the exit code.
func (s *Server) Exec(stream shoalv1.ContainerService_ExecServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	start := first.GetStart()
	if start == nil {
		return invalid("start", "the first exec message must be a start")
	}
	if len(start.GetCommand()) == 0 {
		return invalid("command", "a command is required")
	}
	ct, err := s.container(start.GetName())
	if err != nil {
		return err
	}
	if owner := s.ownerOf(stream.Context(), ct.GetName()); owner != "" {
		rs, err := s.remoteStream(stream.Context(), owner, "/shoal.v1.ContainerService/Exec", true, true)
		if err != nil {
			return err
		}
		return proxyStream(stream.Context(), stream.Send, stream.Recv, rs, first, true,
			func() *shoalv1.ExecResponse { return &shoalv1.ExecResponse{} })
	}

	var sendMu sync.Mutex
	send := func(r *shoalv1.ExecResponse) error {
		sendMu.Lock()
		defer sendMu.Unlock()
		return stream.Send(r)
	}
	stdinR, stdinW := io.Pipe()
	resize := make(chan [2]uint16, 4)
	signals := make(chan int, 8)
	go func() {
		defer stdinW.Close()
		for {
			m, err := stream.Recv()
			if err != nil {
				return
			}
			switch {
			case m.GetStdinEof():
				stdinW.Close()
			case m.GetResize() != nil:
				select {
				case resize <- [2]uint16{uint16(m.GetResize().GetRows()), uint16(m.GetResize().GetCols())}:
				default:
				}
			case m.GetSignal() != 0:
				select {
				case signals <- int(m.GetSignal()):
				default:
				}
			case m.GetStdin() != nil:
				if _, err := stdinW.Write(m.GetStdin()); err != nil {
					// The command closed its stdin; drop the rest.
					continue
				}
			}
		}
	}()
	req := runtime.ExecRequest{
		Cmd: start.GetCommand(), Env: start.GetEnv(), Cwd: start.GetCwd(),
		UID: start.GetUser(), GID: start.GetGroup(),
		Stdin:  stdinR,
		Stdout: streamWriter(func(b []byte) error { return send(&shoalv1.ExecResponse{Msg: &shoalv1.ExecResponse_Stdout{Stdout: b}}) }),
		Stderr: streamWriter(func(b []byte) error { return send(&shoalv1.ExecResponse{Msg: &shoalv1.ExecResponse_Stderr{Stderr: b}}) }),
		TTY:    start.GetTty(), Rows: uint16(start.GetRows()), Cols: uint16(start.GetCols()), Resize: resize,
		Signals: signals,
	}
	code, err := s.node.Exec(stream.Context(), ct.GetName(), req)
	stdinR.Close()
	if err != nil {
		return toStatus(err)
	}
	return send(&shoalv1.ExecResponse{Msg: &shoalv1.ExecResponse_ExitCode{ExitCode: int32(code)}})
}

// streamWriter adapts a send function to io.Writer, copying each write.
type streamWriter func([]byte) error

func (w streamWriter) Write(p []byte) (int, error) {
	for off := 0; off < len(p); off += chunkSize {
		end := min(off+chunkSize, len(p))
		if err := w(append([]byte(nil), p[off:end]...)); err != nil {
			return off, err
		}
	}
	return len(p), nil
}

// streamReader turns the data messages of a client stream into a reader;
// the stream's end is the reader's EOF.
func streamReader(recv func() ([]byte, error)) *io.PipeReader {
	pr, pw := io.Pipe()
	go func() {
		for {
			b, err := recv()
			if errors.Is(err, io.EOF) {
				pw.Close()
				return
			}
			if err != nil {
				pw.CloseWithError(err)
				return
			}
			if _, err := pw.Write(b); err != nil {
				return
			}
		}
	}()
	return pr
}

// PushFile writes a file into a container: a header, then data messages.
func (s *Server) PushFile(stream shoalv1.ContainerService_PushFileServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	h := first.GetHeader()
	if h == nil {
		return invalid("header", "the first message must be a header")
	}
	if h.GetPath() == "" || h.GetPath()[0] != '/' {
		return invalid("path", "an absolute path inside the container is required")
	}
	if owner := s.ownerOf(stream.Context(), h.GetName()); owner != "" {
		rs, err := s.remoteStream(stream.Context(), owner, "/shoal.v1.ContainerService/PushFile", false, true)
		if err != nil {
			return err
		}
		return proxyStream(stream.Context(), stream.SendAndClose, stream.Recv, rs, first, true,
			func() *shoalv1.PushFileResponse { return &shoalv1.PushFileResponse{} })
	}
	mode := os.FileMode(h.GetMode() & 0o7777)
	if mode == 0 {
		mode = 0o644
	}
	pr := streamReader(func() ([]byte, error) {
		m, err := stream.Recv()
		return m.GetData(), err
	})
	err = s.node.PushFile(stream.Context(), h.GetName(), h.GetPath(), pr, mode, int(h.GetUid()), int(h.GetGid()))
	pr.CloseWithError(err)
	if err != nil {
		return toStatus(err)
	}
	return stream.SendAndClose(&shoalv1.PushFileResponse{})
}

// PullFile reads a file from a container: a header, then data messages.
func (s *Server) PullFile(req *shoalv1.PullFileRequest, stream shoalv1.ContainerService_PullFileServer) error {
	if req.GetPath() == "" || req.GetPath()[0] != '/' {
		return invalid("path", "an absolute path inside the container is required")
	}
	if owner := s.ownerOf(stream.Context(), req.GetName()); owner != "" {
		rs, err := s.remoteStream(stream.Context(), owner, "/shoal.v1.ContainerService/PullFile", true, false)
		if err != nil {
			return err
		}
		none := func() (*shoalv1.PullFileRequest, error) { return nil, io.EOF }
		return proxyStream(stream.Context(), stream.Send, none, rs, req, true,
			func() *shoalv1.PullFileResponse { return &shoalv1.PullFileResponse{} })
	}
	if req.GetArchive() {
		return s.pullArchive(req, stream)
	}
	rc, fi, err := s.node.PullFile(stream.Context(), req.GetName(), req.GetPath())
	if err != nil {
		return toStatus(err)
	}
	defer rc.Close()
	h := &shoalv1.FileHeader{Name: req.GetName(), Path: req.GetPath(), Mode: uint32(fi.Mode().Perm()), Size: fi.Size()}
	uid, gid := s.node.FileOwner(req.GetName(), fi)
	h.Uid, h.Gid = int32(uid), int32(gid)
	if err := stream.Send(&shoalv1.PullFileResponse{Msg: &shoalv1.PullFileResponse_Header{Header: h}}); err != nil {
		return err
	}
	buf := make([]byte, chunkSize)
	for {
		n, err := rc.Read(buf)
		if n > 0 {
			if serr := stream.Send(&shoalv1.PullFileResponse{Msg: &shoalv1.PullFileResponse_Data{Data: append([]byte(nil), buf[:n]...)}}); serr != nil {
				return serr
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return toStatus(err)
		}
	}
}
