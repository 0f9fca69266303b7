package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// DefaultSocket is where shoald listens by default.
const DefaultSocket = "/var/lib/shoal/shoal.socket"

// Errors a caller can branch on with errors.Is; they are recovered from the
// gRPC status codes the daemon returns.
var (
	ErrNotFound           = errors.New("not found")
	ErrAlreadyExists      = errors.New("already exists")
	ErrInvalidArgument    = errors.New("invalid argument")
	ErrFailedPrecondition = errors.New("failed precondition")
	ErrUnavailable        = errors.New("unavailable")
)

// Client is a connection to a Shoal daemon.
type Client struct {
	conn       *grpc.ClientConn
	Containers shoalv1.ContainerServiceClient
	Images     shoalv1.ImageServiceClient
	Storage    shoalv1.StorageServiceClient
	Networks   shoalv1.NetworkServiceClient
	Profiles   shoalv1.ProfileServiceClient
	Operations shoalv1.OperationServiceClient
	Events     shoalv1.EventServiceClient
	Cluster    shoalv1.ClusterServiceClient
}

// Dial connects to a daemon without TLS: a unix socket path, "unix://PATH",
// or a plain TCP "host:port" (a loopback development endpoint).
func Dial(target string) (*Client, error) {
	if strings.HasPrefix(target, "/") {
		target = "unix://" + target
	}
	return dial(target, insecure.NewCredentials())
}

// DialTLS connects to a cluster member's mutual-TLS endpoint ("host:port")
// with a client certificate (see `shoal remote add`).
func DialTLS(target string, cfg *tls.Config) (*Client, error) {
	return dial(target, credentials.NewTLS(cfg))
}

func dial(target string, creds credentials.TransportCredentials) (*Client, error) {
	conn, err := grpc.NewClient(target,
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16<<20)))
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", target, err)
	}
	return &Client{
		conn:       conn,
		Containers: shoalv1.NewContainerServiceClient(conn),
		Images:     shoalv1.NewImageServiceClient(conn),
		Storage:    shoalv1.NewStorageServiceClient(conn),
		Networks:   shoalv1.NewNetworkServiceClient(conn),
		Profiles:   shoalv1.NewProfileServiceClient(conn),
		Operations: shoalv1.NewOperationServiceClient(conn),
		Events:     shoalv1.NewEventServiceClient(conn),
		Cluster:    shoalv1.NewClusterServiceClient(conn),
	}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Error wraps a gRPC error so that errors.Is matches this package's
// sentinels; its message is the daemon's.
type Error struct {
	Code codes.Code
	Msg  string
}

func (e *Error) Error() string { return e.Msg }

// Is maps status codes to sentinels.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.Code == codes.NotFound
	case ErrAlreadyExists:
		return e.Code == codes.AlreadyExists
	case ErrInvalidArgument:
		return e.Code == codes.InvalidArgument
	case ErrFailedPrecondition:
		return e.Code == codes.FailedPrecondition
	case ErrUnavailable:
		return e.Code == codes.Unavailable
	}
	return false
}

// Convert turns a gRPC error into an *Error (nil stays nil).
func Convert(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	if st.Code() == codes.Unavailable && strings.Contains(st.Message(), "connection error") {
		return &Error{Code: st.Code(), Msg: "cannot reach shoald: " + st.Message()}
	}
	return &Error{Code: st.Code(), Msg: st.Message()}
}

// Wait follows an operation until it ends, calling progress (may be nil) on
// every update, and returns an error when it failed.
func (c *Client) Wait(ctx context.Context, op *shoalv1.Operation, progress func(*shoalv1.Operation)) (*shoalv1.Operation, error) {
	stream, err := c.Operations.WatchOperation(ctx, &shoalv1.WatchOperationRequest{Id: op.GetId()})
	if err != nil {
		return nil, Convert(err)
	}
	last := op
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return last, Convert(err)
		}
		last = resp.GetOperation()
		if progress != nil {
			progress(last)
		}
	}
	return last, OperationError(last)
}

// OperationError returns the error of a failed or cancelled operation.
func OperationError(op *shoalv1.Operation) error {
	switch op.GetStatus() {
	case shoalv1.OperationStatus_OPERATION_STATUS_SUCCESS:
		return nil
	case shoalv1.OperationStatus_OPERATION_STATUS_RUNNING:
		return fmt.Errorf("operation %s is still running", op.GetId())
	}
	return &Error{Code: codes.Code(op.GetErrorCode()), Msg: op.GetError()}
}

// ExecOptions configures Exec.
type ExecOptions struct {
	Env    []string
	Cwd    string
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	TTY    bool
	Rows   uint16
	Cols   uint16
	// Resize delivers window size changes (rows, cols) for TTY sessions.
	Resize <-chan [2]uint16
	// Signals delivers signal numbers for the command.
	Signals <-chan int
	// User and Group are the numeric ids the command runs as inside the
	// container (0: root).
	User, Group uint32
}

// Exec runs a command in a container and returns its exit code.
func (c *Client) Exec(ctx context.Context, name string, cmd []string, o ExecOptions) (int, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.Containers.Exec(ctx)
	if err != nil {
		return -1, Convert(err)
	}
	start := &shoalv1.ExecStart{Name: name, Command: cmd, Env: o.Env, Cwd: o.Cwd, Tty: o.TTY, Rows: uint32(o.Rows), Cols: uint32(o.Cols),
		User: o.User, Group: o.Group}
	if err := stream.Send(&shoalv1.ExecRequest{Msg: &shoalv1.ExecRequest_Start{Start: start}}); err != nil {
		return -1, Convert(err)
	}
	sendErr := make(chan error, 1)
	go func() {
		sendErr <- pumpStdin(ctx, stream, o.Stdin, o.Resize, o.Signals)
	}()
	for {
		resp, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return -1, errors.New("exec stream ended without an exit code")
			}
			return -1, Convert(err)
		}
		switch m := resp.GetMsg().(type) {
		case *shoalv1.ExecResponse_Stdout:
			if o.Stdout != nil {
				o.Stdout.Write(m.Stdout)
			}
		case *shoalv1.ExecResponse_Stderr:
			if o.Stderr != nil {
				o.Stderr.Write(m.Stderr)
			}
		case *shoalv1.ExecResponse_ExitCode:
			return int(m.ExitCode), nil
		}
	}
}

func pumpStdin(ctx context.Context, stream shoalv1.ContainerService_ExecClient, in io.Reader, resize <-chan [2]uint16, signals <-chan int) error {
	// gRPC streams take one sender at a time.
	var mu sync.Mutex
	send := func(m *shoalv1.ExecRequest) error {
		mu.Lock()
		defer mu.Unlock()
		return stream.Send(m)
	}
	if signals != nil {
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case sig, ok := <-signals:
					if !ok {
						return
					}
					_ = send(&shoalv1.ExecRequest{Msg: &shoalv1.ExecRequest_Signal{Signal: int32(sig)}})
				}
			}
		}()
	}
	if resize != nil {
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case ws, ok := <-resize:
					if !ok {
						return
					}
					_ = send(&shoalv1.ExecRequest{Msg: &shoalv1.ExecRequest_Resize{Resize: &shoalv1.WindowSize{Rows: uint32(ws[0]), Cols: uint32(ws[1])}}})
				}
			}
		}()
	}
	if in != nil {
		if err := sendChunks(in, 32<<10, func(b []byte) error {
			return send(&shoalv1.ExecRequest{Msg: &shoalv1.ExecRequest_Stdin{Stdin: b}})
		}); err != nil {
			return err
		}
	}
	return send(&shoalv1.ExecRequest{Msg: &shoalv1.ExecRequest_StdinEof{StdinEof: true}})
}

// PushFile writes r to path in a container.
func (c *Client) PushFile(ctx context.Context, h *shoalv1.FileHeader, r io.Reader) error {
	stream, err := c.Containers.PushFile(ctx)
	if err != nil {
		return Convert(err)
	}
	if err := stream.Send(&shoalv1.PushFileRequest{Msg: &shoalv1.PushFileRequest_Header{Header: h}}); err != nil {
		_, err = stream.CloseAndRecv()
		return Convert(err)
	}
	if err := sendChunks(r, 64<<10, func(b []byte) error {
		return stream.Send(&shoalv1.PushFileRequest{Msg: &shoalv1.PushFileRequest_Data{Data: b}})
	}); err != nil {
		if _, rerr := stream.CloseAndRecv(); rerr != nil {
			return Convert(rerr)
		}
		return err
	}
	_, err = stream.CloseAndRecv()
	return Convert(err)
}

// sendChunks reads r to its end and sends it in chunks of at most size.
func sendChunks(r io.Reader, size int, send func([]byte) error) error {
	buf := make([]byte, size)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if serr := send(append([]byte(nil), buf[:n]...)); serr != nil {
				return serr
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// PullFile copies a file out of a container into w and returns its header.
func (c *Client) PullFile(ctx context.Context, name, path string, w io.Writer) (*shoalv1.FileHeader, error) {
	stream, err := c.Containers.PullFile(ctx, &shoalv1.PullFileRequest{Name: name, Path: path})
	if err != nil {
		return nil, Convert(err)
	}
	var h *shoalv1.FileHeader
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return h, nil
		}
		if err != nil {
			return h, Convert(err)
		}
		switch m := resp.GetMsg().(type) {
		case *shoalv1.PullFileResponse_Header:
			h = m.Header
		case *shoalv1.PullFileResponse_Data:
			if _, err := w.Write(m.Data); err != nil {
				return h, err
			}
		}
	}
}

// ImportImage uploads an image tarball.
func (c *Client) ImportImage(ctx context.Context, r io.Reader, aliases []string) (*shoalv1.Image, error) {
	return c.ImportImageWith(ctx, r, &shoalv1.ImportImageHeader{Aliases: aliases})
}

// ImportImageWith uploads an image (a unified tarball, an OCI layout or a
// docker save archive) with the given header: aliases, and the tag of the
// image to take from an archive holding several.
func (c *Client) ImportImageWith(ctx context.Context, r io.Reader, h *shoalv1.ImportImageHeader) (*shoalv1.Image, error) {
	stream, err := c.Images.ImportImage(ctx)
	if err != nil {
		return nil, Convert(err)
	}
	if err := stream.Send(&shoalv1.ImportImageRequest{Msg: &shoalv1.ImportImageRequest_Header{Header: h}}); err != nil {
		_, err = stream.CloseAndRecv()
		return nil, Convert(err)
	}
	if err := sendChunks(r, 256<<10, func(b []byte) error {
		return stream.Send(&shoalv1.ImportImageRequest{Msg: &shoalv1.ImportImageRequest_Data{Data: b}})
	}); err != nil {
		if _, rerr := stream.CloseAndRecv(); rerr != nil {
			return nil, Convert(rerr)
		}
		return nil, err
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		return nil, Convert(err)
	}
	return resp.GetImage(), nil
}

// ExportImage downloads an image tarball into w.
func (c *Client) ExportImage(ctx context.Context, ref string, w io.Writer) (*shoalv1.Image, error) {
	stream, err := c.Images.ExportImage(ctx, &shoalv1.ExportImageRequest{Image: ref})
	if err != nil {
		return nil, Convert(err)
	}
	var img *shoalv1.Image
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return img, nil
		}
		if err != nil {
			return img, Convert(err)
		}
		switch m := resp.GetMsg().(type) {
		case *shoalv1.ExportImageResponse_Image:
			img = m.Image
		case *shoalv1.ExportImageResponse_Data:
			if _, err := w.Write(m.Data); err != nil {
				return img, err
			}
		}
	}
}

// ExportContainer downloads a backup tarball of a container into w. info,
// when set, gets the backup's description before any data.
func (c *Client) ExportContainer(ctx context.Context, req *shoalv1.ExportContainerRequest, w io.Writer, info func(*shoalv1.BackupInfo)) (*shoalv1.BackupInfo, error) {
	stream, err := c.Containers.ExportContainer(ctx, req)
	if err != nil {
		return nil, Convert(err)
	}
	var bi *shoalv1.BackupInfo
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			if bi == nil {
				return nil, errors.New("export: the daemon sent no backup")
			}
			return bi, nil
		}
		if err != nil {
			return bi, Convert(err)
		}
		switch m := resp.GetMsg().(type) {
		case *shoalv1.ExportContainerResponse_Info:
			bi = m.Info
			if info != nil {
				info(bi)
			}
		case *shoalv1.ExportContainerResponse_Data:
			if _, err := w.Write(m.Data); err != nil {
				return bi, err
			}
		}
	}
}

// ImportContainer uploads a backup tarball; the container is created
// stopped.
func (c *Client) ImportContainer(ctx context.Context, h *shoalv1.ImportContainerHeader, r io.Reader) (*shoalv1.ImportContainerResponse, error) {
	stream, err := c.Containers.ImportContainer(ctx)
	if err != nil {
		return nil, Convert(err)
	}
	if err := stream.Send(&shoalv1.ImportContainerRequest{Msg: &shoalv1.ImportContainerRequest_Header{Header: h}}); err != nil {
		_, err = stream.CloseAndRecv()
		return nil, Convert(err)
	}
	if err := sendChunks(r, 256<<10, func(b []byte) error {
		return stream.Send(&shoalv1.ImportContainerRequest{Msg: &shoalv1.ImportContainerRequest_Data{Data: b}})
	}); err != nil {
		if _, rerr := stream.CloseAndRecv(); rerr != nil {
			return nil, Convert(rerr)
		}
		return nil, err
	}
	resp, err := stream.CloseAndRecv()
	return resp, Convert(err)
}
