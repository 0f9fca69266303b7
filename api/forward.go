package api

import (
	"context"
	"errors"
	"io"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// Calls about one container run on the node that owns it: any member
// forwards them there over the members' mutual TLS, so every call works
// from every node.

// containerField names, per forwarded method, the request field that holds
// the container's name.
var containerField = map[string]protoreflect.Name{
	"/shoal.v1.ContainerService/GetContainer":         "name",
	"/shoal.v1.ContainerService/UpdateContainer":      "name",
	"/shoal.v1.ContainerService/DeleteContainer":      "name",
	"/shoal.v1.ContainerService/ChangeContainerState": "name",
	"/shoal.v1.ContainerService/GetConsoleLog":        "name",
	"/shoal.v1.ContainerService/CopyContainer":        "source",
	"/shoal.v1.ContainerService/MoveContainer":        "name",
	"/shoal.v1.ContainerService/AddNIC":               "container",
	"/shoal.v1.ContainerService/CreateSnapshot":       "container",
	"/shoal.v1.ContainerService/RestoreSnapshot":      "container",
	"/shoal.v1.ContainerService/DeleteSnapshot":       "container",
	"/shoal.v1.ContainerService/RenameContainer":      "name",
	"/shoal.v1.ContainerService/RenameSnapshot":       "container",
	"/shoal.v1.ContainerService/DeleteFile":           "name",
	"/shoal.v1.ImageService/PublishImage":             "container",
}

// volumeFields names, per forwarded method, the request fields that hold a
// custom volume's pool and name: those calls run on the volume's member.
var volumeFields = map[string][2]protoreflect.Name{
	"/shoal.v1.StorageService/GetStorageVolume":             {"pool", "name"},
	"/shoal.v1.StorageService/UpdateStorageVolume":          {"pool", "name"},
	"/shoal.v1.StorageService/DeleteStorageVolume":          {"pool", "name"},
	"/shoal.v1.StorageService/CreateStorageVolumeSnapshot":  {"pool", "name"},
	"/shoal.v1.StorageService/DeleteStorageVolumeSnapshot":  {"pool", "name"},
	"/shoal.v1.StorageService/RestoreStorageVolumeSnapshot": {"pool", "name"},
	"/shoal.v1.StorageService/CopyStorageVolume":            {"pool", "name"},
	"/shoal.v1.StorageService/MoveStorageVolume":            {"pool", "name"},
}

// targetField names, per forwarded method, the request field naming the
// member that must run it (a create on another member).
var targetField = map[string]protoreflect.Name{
	"/shoal.v1.StorageService/CreateStorageVolume": "target",
	"/shoal.v1.ClusterService/GetResources":        "target",
}

// forwardedKey marks a forwarded call, so it is never forwarded twice.
const forwardedKey = "shoal-forwarded-by"

func forwarded(ctx context.Context) bool {
	md, _ := metadata.FromIncomingContext(ctx)
	return len(md.Get(forwardedKey)) > 0
}

// ownerOf returns the node that owns the named container when it is not
// this one ("" to handle the call here).
func (s *Server) ownerOf(ctx context.Context, name string) string {
	if s.peers == nil || forwarded(ctx) {
		return ""
	}
	s.catchUp(ctx)
	ct, err := s.fsm.Container(name)
	if err != nil || ct.GetNode() == s.node.Name() || ct.GetNode() == "" {
		return ""
	}
	return ct.GetNode()
}

// volumeOwner returns the member holding a custom volume when it is not
// this one ("" to handle the call here).
func (s *Server) volumeOwner(ctx context.Context, pool, name string) string {
	if s.peers == nil || forwarded(ctx) {
		return ""
	}
	s.catchUp(ctx)
	v, err := s.fsm.Volume(pool, name)
	if err != nil || v.GetNode() == s.node.Name() {
		return ""
	}
	return v.GetNode()
}

// targetOwner returns the member a request names as its target when it is
// another known member ("" to handle the call here).
func (s *Server) targetOwner(ctx context.Context, target string) string {
	if s.peers == nil || forwarded(ctx) || target == "" || target == s.node.Name() {
		return ""
	}
	if _, err := s.fsm.Node(target); err != nil {
		return "" // the handler names the unknown member
	}
	return target
}

// routeOf says which member must run a unary call ("" for this one).
func (s *Server) routeOf(ctx context.Context, method string, req any) string {
	msg := req.(proto.Message).ProtoReflect()
	get := func(field protoreflect.Name) (string, bool) {
		fd := msg.Descriptor().Fields().ByName(field)
		if fd == nil {
			return "", false
		}
		return msg.Get(fd).String(), true
	}
	if field, ok := containerField[method]; ok {
		if name, ok := get(field); ok {
			return s.ownerOf(ctx, name)
		}
	}
	if fields, ok := volumeFields[method]; ok {
		pool, ok1 := get(fields[0])
		name, ok2 := get(fields[1])
		if ok1 && ok2 {
			return s.volumeOwner(ctx, pool, name)
		}
	}
	if field, ok := targetField[method]; ok {
		if target, ok := get(field); ok {
			return s.targetOwner(ctx, target)
		}
	}
	return ""
}

// outgoing is the context for a call forwarded to another member.
func (s *Server) outgoing(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, forwardedKey, s.node.Name(),
		appliedKey, strconv.FormatUint(s.fsm.Applied(), 10))
}

// forwardUnary is a unary interceptor that sends container-scoped calls to
// the owner node.
func (s *Server) forwardUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	owner := s.routeOf(ctx, info.FullMethod, req)
	if owner == "" {
		return h(ctx, req)
	}
	reply, err := newReply(info.FullMethod)
	if err != nil {
		return nil, err
	}
	conn, err := s.memberConn(owner)
	if err != nil {
		return nil, err
	}
	if err := conn.Invoke(s.outgoing(ctx), info.FullMethod, req, reply); err != nil {
		return nil, err
	}
	return reply, nil
}

// newReply makes an empty response message for a full method name.
func newReply(fullMethod string) (proto.Message, error) {
	svc, method, ok := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	if !ok {
		return nil, errors.New("malformed method name " + fullMethod)
	}
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(svc))
	if err != nil {
		return nil, err
	}
	sd, ok := d.(protoreflect.ServiceDescriptor)
	if !ok {
		return nil, errors.New(svc + " is not a service")
	}
	md := sd.Methods().ByName(protoreflect.Name(method))
	if md == nil {
		return nil, errors.New("no method " + fullMethod)
	}
	mt, err := protoregistry.GlobalTypes.FindMessageByName(md.Output().FullName())
	if err != nil {
		return nil, err
	}
	return mt.New().Interface(), nil
}

// proxyStream relays a stream between a caller and the same method on
// another member until either side ends. first, when set, is a message
// already read from the caller.
func proxyStream[Req, Resp proto.Message](ctx context.Context, send func(Resp) error, recv func() (Req, error),
	remote grpc.ClientStream, first Req, hasFirst bool, newResp func() Resp) error {
	errc := make(chan error, 1)
	go func() {
		if hasFirst {
			if err := remote.SendMsg(first); err != nil {
				errc <- err
				return
			}
		}
		for {
			m, err := recv()
			if errors.Is(err, io.EOF) {
				errc <- remote.CloseSend()
				return
			}
			if err != nil {
				errc <- err
				return
			}
			if err := remote.SendMsg(m); err != nil {
				errc <- err
				return
			}
		}
	}()
	for {
		m := newResp()
		err := remote.RecvMsg(m)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := send(m); err != nil {
			return err
		}
	}
}

// remoteStream opens the same streaming method on another member.
func (s *Server) remoteStream(ctx context.Context, owner, method string, serverStreams, clientStreams bool) (grpc.ClientStream, error) {
	conn, err := s.memberConn(owner)
	if err != nil {
		return nil, err
	}
	desc := &grpc.StreamDesc{StreamName: method, ServerStreams: serverStreams, ClientStreams: clientStreams}
	return conn.NewStream(s.outgoing(ctx), desc, method)
}

// memberConn returns the connection to the member a call must run on, or,
// at once, Unavailable naming the member when this one knows it is not
// answering (gossip declared it dead or it left, or the cluster marked it
// offline): a call never waits on a member that is gone.
func (s *Server) memberConn(name string) (*grpc.ClientConn, error) {
	if why, gone := s.cl.Unreachable(name); gone {
		// Gossip lags a member's return (a healed link, a restart) by a
		// second or two: one that answers its health check at once is
		// reached all the same.
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		back := s.peers != nil && s.peers.Healthy(ctx, name)
		cancel()
		if !back {
			return nil, status.Errorf(codes.Unavailable, "member %s is %s", name, why)
		}
	}
	conn, err := s.peers.conn(name)
	if err != nil {
		return nil, toStatus(err)
	}
	return conn, nil
}
