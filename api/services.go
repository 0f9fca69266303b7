package api

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/api/operations"
	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/internal/config"
	"github.com/shoal-dev/shoal/network"
	"github.com/shoal-dev/shoal/network/ipam"
	"github.com/shoal-dev/shoal/node/images"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// GetConsoleLog returns a container's console log.
func (s *Server) GetConsoleLog(ctx context.Context, req *shoalv1.GetConsoleLogRequest) (*shoalv1.GetConsoleLogResponse, error) {
	b, err := s.node.ConsoleLog(ctx, req.GetName())
	if err != nil {
		return nil, toStatus(err)
	}
	return &shoalv1.GetConsoleLogResponse{Log: b}, nil
}

// --- images ---

// recordImage records a local image and its aliases in the cluster.
func (s *Server) recordImage(ctx context.Context, img images.Image, aliases []string) (*shoalv1.Image, error) {
	rec := &shoalv1.Image{
		Fingerprint: img.Fingerprint, Size: img.Size, Properties: img.Metadata.Properties,
		Architecture: img.Metadata.Architecture, CreatedAtUnixNano: img.Metadata.CreationDate * int64(time.Second),
		Nodes: []string{s.node.Name()},
	}
	if err := s.cl.Propose(ctx, &shoalv1.ImageAddCommand{Image: rec}); err != nil {
		return nil, err
	}
	for _, a := range aliases {
		if err := s.cl.Propose(ctx, &shoalv1.AliasSetCommand{Alias: a, Fingerprint: img.Fingerprint}); err != nil {
			return nil, err
		}
	}
	s.bus.Lifecycle(s.node.Name(), "image-created", img.Fingerprint)
	return s.fsm.ResolveImage(img.Fingerprint)
}

func validAliases(aliases []string) error {
	for _, a := range aliases {
		if err := config.ValidateName("alias", a); err != nil {
			return err
		}
	}
	return nil
}

// BuildImage builds busybox or debian images as an operation.
func (s *Server) BuildImage(ctx context.Context, req *shoalv1.BuildImageRequest) (*shoalv1.BuildImageResponse, error) {
	switch req.GetBuilder() {
	case "busybox":
	case "debian":
		switch req.GetSuite() {
		case "":
			req.Suite = "bookworm"
		case "bookworm", "trixie":
		default:
			return nil, invalid("suite", fmt.Sprintf("%q is not supported (allowed: bookworm, trixie)", req.GetSuite()))
		}
	default:
		return nil, invalid("builder", fmt.Sprintf("%q is not a builder (allowed: busybox, debian)", req.GetBuilder()))
	}
	alias := req.GetAlias()
	if alias == "" {
		alias = req.GetBuilder()
	}
	if err := config.ValidateName("alias", alias); err != nil {
		return nil, toStatus(err)
	}
	op := s.ops.Start("image-build", "images/"+alias, func(ctx context.Context, p *operations.Progress) (map[string]string, error) {
		img, err := s.node.BuildImage(ctx, req.GetBuilder(), req.GetSuite(), p.Set)
		if err != nil {
			return nil, err
		}
		if _, err := s.recordImage(ctx, img, []string{alias}); err != nil {
			return nil, err
		}
		return map[string]string{"fingerprint": img.Fingerprint, "alias": alias}, nil
	})
	return &shoalv1.BuildImageResponse{Operation: op}, nil
}

// ImportImage stores an uploaded image tarball.
func (s *Server) ImportImage(stream shoalv1.ImageService_ImportImageServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	h := first.GetHeader()
	if h == nil {
		return invalid("header", "the first message must be a header")
	}
	if err := validAliases(h.GetAliases()); err != nil {
		return toStatus(err)
	}
	pr := streamReader(func() ([]byte, error) {
		m, err := stream.Recv()
		return m.GetData(), err
	})
	ctx := stream.Context()
	if h.GetTag() != "" {
		ctx = images.WithImportRef(ctx, h.GetTag())
	}
	img, err := s.node.ImportImage(ctx, pr)
	pr.CloseWithError(err)
	if err != nil {
		return toStatus(err)
	}
	rec, err := s.recordImage(stream.Context(), img, h.GetAliases())
	if err != nil {
		return toStatus(err)
	}
	return stream.SendAndClose(&shoalv1.ImportImageResponse{Image: rec})
}

// ExportImage streams an image tarball: the image record, then data.
func (s *Server) ExportImage(req *shoalv1.ExportImageRequest, stream shoalv1.ImageService_ExportImageServer) error {
	rec, err := s.fsm.ResolveImage(req.GetImage())
	if err != nil {
		return toStatus(fmt.Errorf("image: %w", err))
	}
	rc, _, err := s.node.ExportImage(rec.GetFingerprint())
	if err != nil {
		return toStatus(err)
	}
	defer rc.Close()
	if err := stream.Send(&shoalv1.ExportImageResponse{Msg: &shoalv1.ExportImageResponse_Image{Image: rec}}); err != nil {
		return err
	}
	w := streamWriter(func(b []byte) error {
		return stream.Send(&shoalv1.ExportImageResponse{Msg: &shoalv1.ExportImageResponse_Data{Data: b}})
	})
	if _, err := io.CopyBuffer(w, rc, make([]byte, chunkSize)); err != nil {
		return toStatus(err)
	}
	return nil
}

// ListImages lists images.
func (s *Server) ListImages(ctx context.Context, _ *shoalv1.ListImagesRequest) (*shoalv1.ListImagesResponse, error) {
	if err := s.current(ctx); err != nil {
		return nil, err
	}
	return &shoalv1.ListImagesResponse{Images: s.fsm.Images()}, nil
}

// GetImage returns an image by alias or fingerprint prefix.
func (s *Server) GetImage(ctx context.Context, req *shoalv1.GetImageRequest) (*shoalv1.GetImageResponse, error) {
	img, err := s.resolveImage(ctx, req.GetImage())
	if err != nil {
		return nil, err
	}
	return &shoalv1.GetImageResponse{Image: img}, nil
}

// DeleteImage deletes an image from the cluster and this host.
func (s *Server) DeleteImage(ctx context.Context, req *shoalv1.DeleteImageRequest) (*shoalv1.DeleteImageResponse, error) {
	img, err := s.resolveImage(ctx, req.GetImage())
	if err != nil {
		return nil, err
	}
	if err := s.propose(ctx, &shoalv1.ImageDeleteCommand{Fingerprint: img.GetFingerprint()}); err != nil {
		return nil, err
	}
	if err := s.node.DeleteImage(ctx, img.GetFingerprint()); err != nil {
		return nil, toStatus(err)
	}
	s.bus.Lifecycle(s.node.Name(), "image-deleted", img.GetFingerprint())
	return &shoalv1.DeleteImageResponse{}, nil
}

// PublishImage makes an image of a container or snapshot as an operation.
func (s *Server) PublishImage(ctx context.Context, req *shoalv1.PublishImageRequest) (*shoalv1.PublishImageResponse, error) {
	ct, err := s.container(req.GetContainer())
	if err != nil {
		return nil, err
	}
	if req.GetSnapshot() != "" {
		if _, err := snapshotOf(ct, req.GetSnapshot()); err != nil {
			return nil, err
		}
	}
	if err := validAliases(req.GetAliases()); err != nil {
		return nil, toStatus(err)
	}
	op := s.ops.Start("image-publish", "containers/"+ct.GetName(), func(ctx context.Context, p *operations.Progress) (map[string]string, error) {
		img, err := s.node.PublishImage(ctx, ct, req.GetSnapshot(), req.GetProperties(), p.Set)
		if err != nil {
			return nil, err
		}
		if _, err := s.recordImage(ctx, img, req.GetAliases()); err != nil {
			return nil, err
		}
		return map[string]string{"fingerprint": img.Fingerprint}, nil
	})
	return &shoalv1.PublishImageResponse{Operation: op}, nil
}

// CreateImageAlias points an alias at an image.
func (s *Server) CreateImageAlias(ctx context.Context, req *shoalv1.CreateImageAliasRequest) (*shoalv1.CreateImageAliasResponse, error) {
	if err := config.ValidateName("alias", req.GetAlias()); err != nil {
		return nil, toStatus(err)
	}
	img, err := s.resolveImage(ctx, req.GetImage())
	if err != nil {
		return nil, err
	}
	if err := s.propose(ctx, &shoalv1.AliasSetCommand{Alias: req.GetAlias(), Fingerprint: img.GetFingerprint()}); err != nil {
		return nil, err
	}
	return &shoalv1.CreateImageAliasResponse{}, nil
}

// DeleteImageAlias removes an alias.
func (s *Server) DeleteImageAlias(ctx context.Context, req *shoalv1.DeleteImageAliasRequest) (*shoalv1.DeleteImageAliasResponse, error) {
	if err := s.propose(ctx, &shoalv1.AliasDeleteCommand{Alias: req.GetAlias()}); err != nil {
		return nil, err
	}
	return &shoalv1.DeleteImageAliasResponse{}, nil
}

// --- storage ---

// ListStoragePools lists pools.
func (s *Server) ListStoragePools(ctx context.Context, _ *shoalv1.ListStoragePoolsRequest) (*shoalv1.ListStoragePoolsResponse, error) {
	if err := s.current(ctx); err != nil {
		return nil, err
	}
	return &shoalv1.ListStoragePoolsResponse{Pools: s.fsm.Pools()}, nil
}

// GetStoragePool returns a pool with its usage on this node.
func (s *Server) GetStoragePool(ctx context.Context, req *shoalv1.GetStoragePoolRequest) (*shoalv1.GetStoragePoolResponse, error) {
	p, err := s.fsm.Pool(req.GetName())
	if err != nil {
		return nil, toStatus(err)
	}
	used, err := s.node.PoolUsage(ctx, p.GetName())
	if err != nil {
		return nil, toStatus(err)
	}
	return &shoalv1.GetStoragePoolResponse{Pool: p, UsedBytes: used}, nil
}

// CreateStoragePool creates a pool on this node.
func (s *Server) CreateStoragePool(ctx context.Context, req *shoalv1.CreateStoragePoolRequest) (*shoalv1.CreateStoragePoolResponse, error) {
	if err := config.ValidateName("name", req.GetName()); err != nil {
		return nil, toStatus(err)
	}
	switch req.GetDriver() {
	case "btrfs", "dir", "lvm", "zfs":
	default:
		return nil, invalid("driver", fmt.Sprintf("%q is not a driver (allowed: btrfs, dir, lvm, zfs)", req.GetDriver()))
	}
	if req.GetSizeBytes() < 0 || (req.GetSizeBytes() > 0 && req.GetSizeBytes() < 256<<20) {
		return nil, invalid("size", "must be at least 256MiB")
	}
	for k, v := range req.GetConfig() {
		if k != "btrfs.quotas" || req.GetDriver() != "btrfs" {
			return nil, invalid(k, fmt.Sprintf("unknown option for a %s pool (known: btrfs.quotas on btrfs)", req.GetDriver()))
		}
		if _, err := config.ParseBool(v); err != nil {
			return nil, invalid(k, fmt.Sprintf("%q: want true or false", v))
		}
	}
	var cfg map[string]string
	if config.Bool(req.GetConfig(), "btrfs.quotas") {
		cfg = map[string]string{"btrfs.quotas": "true"}
	}
	p, err := s.node.CreatePool(ctx, &shoalv1.StoragePool{Name: req.GetName(), Driver: req.GetDriver(), Source: req.GetSource(), SizeBytes: req.GetSizeBytes(), Config: cfg})
	if err != nil {
		return nil, toStatus(err)
	}
	return &shoalv1.CreateStoragePoolResponse{Pool: p}, nil
}

// --- networks ---

// ListNetworks lists managed networks.
func (s *Server) ListNetworks(ctx context.Context, _ *shoalv1.ListNetworksRequest) (*shoalv1.ListNetworksResponse, error) {
	if err := s.current(ctx); err != nil {
		return nil, err
	}
	return &shoalv1.ListNetworksResponse{Networks: s.fsm.Networks()}, nil
}

// GetNetwork returns a network with its leases.
func (s *Server) GetNetwork(ctx context.Context, req *shoalv1.GetNetworkRequest) (*shoalv1.GetNetworkResponse, error) {
	for _, n := range s.fsm.Networks() {
		if n.GetName() == req.GetName() {
			var leases []*shoalv1.Lease
			if n.GetType() != "macvlan" { // the LAN's DHCP server holds those
				var err error
				if leases, err = s.node.Leases(n.GetName()); err != nil {
					return nil, toStatus(err)
				}
			}
			resp := &shoalv1.GetNetworkResponse{Network: n, Leases: leases}
			for _, ct := range s.fsm.Containers() {
				for _, nic := range ct.GetNics() {
					if nic.GetNetwork() == n.GetName() {
						resp.Addresses = append(resp.Addresses, &shoalv1.NetworkAddress{Container: ct.GetName(), Nic: nic.GetName(),
							Ipv4: nic.GetIpv4(), Hwaddr: nic.GetHwaddr(), Member: ct.GetNode()})
					}
				}
			}
			for _, m := range s.fsm.Nodes() {
				resp.Members = append(resp.Members, m.GetName())
			}
			return resp, nil
		}
	}
	return nil, status.Errorf(codes.NotFound, "network %q not found", req.GetName())
}

// networkKeys are the config keys CreateNetwork accepts, with what each
// takes.
var networkKeys = map[string]string{
	"ipv4.address": "GATEWAY/PREFIX (10.42.0.1/16) or auto",
	"ipv4.nat":     "true or false",
	"vxlan.id":     "1 to 16777215 (overlay only; default: the lowest free)",
	"vxlan.port":   "1 to 65535 (overlay only; default 4789)",
	"bridge.mtu":   "576 to 9000 (overlay only; default: the underlay's minus 50)",
}

// CreateNetwork validates a new network and has this member bring it up
// and record it; the others follow from the record.
func (s *Server) CreateNetwork(ctx context.Context, req *shoalv1.CreateNetworkRequest) (*shoalv1.CreateNetworkResponse, error) {
	if err := network.ValidateName(req.GetName()); err != nil {
		return nil, invalid("name", err.Error())
	}
	typ := cmp.Or(req.GetType(), "bridge")
	if typ != "bridge" && typ != "overlay" && typ != "macvlan" {
		return nil, invalid("type", fmt.Sprintf("%q: want bridge, overlay or macvlan", req.GetType()))
	}
	rec := &shoalv1.Network{Name: req.GetName(), Type: typ, Ipv4Cidr: "auto", Nat: true}
	if typ == "macvlan" {
		rec.Ipv4Cidr, rec.Nat, rec.Config = "", false, map[string]string{}
		for k, v := range req.GetConfig() {
			if k != "parent" && !strings.HasPrefix(k, "parent.") {
				return nil, invalid(k, "a macvlan network takes only parent (the host interface) and parent.MEMBER (another one on that member)")
			}
			if err := network.ValidateName(v); err != nil {
				return nil, invalid(k, err.Error())
			}
			rec.Config[k] = v
		}
		if len(rec.Config) == 0 {
			return nil, invalid("parent", "required: the host interface the network sits on (parent=eth1)")
		}
		created, err := s.node.CreateNetwork(ctx, rec)
		if err != nil {
			return nil, toStatus(err)
		}
		return &shoalv1.CreateNetworkResponse{Network: created}, nil
	}
	for k, v := range req.GetConfig() {
		want, ok := networkKeys[k]
		if !ok {
			return nil, invalid("config", fmt.Sprintf("unknown key %q: want one of %s", k, strings.Join(slices.Sorted(maps.Keys(networkKeys)), ", ")))
		}
		if typ != "overlay" && strings.HasPrefix(k, "vxlan.") || typ != "overlay" && k == "bridge.mtu" {
			return nil, invalid(k, "only an overlay network has it")
		}
		num := func(lo, hi int64) (int64, error) {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < lo || n > hi {
				return 0, invalid(k, fmt.Sprintf("%q: want %s", v, want))
			}
			return n, nil
		}
		switch k {
		case "ipv4.address":
			if v != "auto" {
				if _, err := ipam.NewPool(v); err != nil {
					return nil, invalid(k, err.Error())
				}
			}
			rec.Ipv4Cidr = v
		case "ipv4.nat":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return nil, invalid(k, fmt.Sprintf("%q: want %s", v, want))
			}
			rec.Nat = b
		case "vxlan.id":
			n, err := num(1, cluster.MaxVNI)
			if err != nil {
				return nil, err
			}
			rec.Vni = uint32(n)
		case "vxlan.port":
			n, err := num(1, 65535)
			if err != nil {
				return nil, err
			}
			rec.Port = int32(n)
		case "bridge.mtu":
			n, err := num(576, 9000)
			if err != nil {
				return nil, err
			}
			rec.Mtu = int32(n)
		}
	}
	if typ == "overlay" && rec.Vni == 0 {
		used := map[uint32]bool{}
		for _, n := range s.fsm.Networks() {
			used[n.GetVni()] = true
		}
		for rec.Vni = 1; used[rec.Vni]; rec.Vni++ {
		}
	}
	created, err := s.node.CreateNetwork(ctx, rec)
	if err != nil {
		return nil, toStatus(err)
	}
	return &shoalv1.CreateNetworkResponse{Network: created}, nil
}

// DeleteNetwork deletes a network; refused while a container uses it.
func (s *Server) DeleteNetwork(ctx context.Context, req *shoalv1.DeleteNetworkRequest) (*shoalv1.DeleteNetworkResponse, error) {
	if err := s.node.DeleteNetwork(ctx, req.GetName()); err != nil {
		return nil, toStatus(err)
	}
	return &shoalv1.DeleteNetworkResponse{}, nil
}

// --- operations and events ---

// opOwner returns the member that runs an operation when it is not this one.
func (s *Server) opOwner(ctx context.Context, id string) string {
	n := operations.NodeOf(id)
	if n == "" || n == s.node.Name() || s.peers == nil || forwarded(ctx) {
		return ""
	}
	return n
}

// opClient returns the OperationService of the member that runs id, or nil
// when it runs here.
func (s *Server) opClient(ctx context.Context, id string) (shoalv1.OperationServiceClient, context.Context, error) {
	owner := s.opOwner(ctx, id)
	if owner == "" {
		return nil, ctx, nil
	}
	c, err := s.memberConn(owner)
	if err != nil {
		return nil, ctx, err
	}
	return shoalv1.NewOperationServiceClient(c), s.outgoing(ctx), nil
}

// GetOperation returns an operation.
func (s *Server) GetOperation(ctx context.Context, req *shoalv1.GetOperationRequest) (*shoalv1.GetOperationResponse, error) {
	if oc, octx, err := s.opClient(ctx, req.GetId()); err != nil || oc != nil {
		if err != nil {
			return nil, err
		}
		return oc.GetOperation(octx, req)
	}
	op, err := s.ops.Get(req.GetId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &shoalv1.GetOperationResponse{Operation: op}, nil
}

// ListOperations lists recent operations of this member.
func (s *Server) ListOperations(ctx context.Context, _ *shoalv1.ListOperationsRequest) (*shoalv1.ListOperationsResponse, error) {
	return &shoalv1.ListOperationsResponse{Operations: s.ops.List()}, nil
}

// WaitOperation waits for an operation to end.
func (s *Server) WaitOperation(ctx context.Context, req *shoalv1.WaitOperationRequest) (*shoalv1.WaitOperationResponse, error) {
	if oc, octx, err := s.opClient(ctx, req.GetId()); err != nil || oc != nil {
		if err != nil {
			return nil, err
		}
		return oc.WaitOperation(octx, req)
	}
	if req.GetTimeoutSeconds() > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(req.GetTimeoutSeconds())*time.Second)
		defer cancel()
	}
	op, err := s.ops.Wait(ctx, req.GetId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &shoalv1.WaitOperationResponse{Operation: op}, nil
}

// WatchOperation streams an operation's updates until it ends.
func (s *Server) WatchOperation(req *shoalv1.WatchOperationRequest, stream shoalv1.OperationService_WatchOperationServer) error {
	if owner := s.opOwner(stream.Context(), req.GetId()); owner != "" {
		rs, err := s.remoteStream(stream.Context(), owner, "/shoal.v1.OperationService/WatchOperation", true, false)
		if err != nil {
			return err
		}
		none := func() (*shoalv1.WatchOperationRequest, error) { return nil, io.EOF }
		return proxyStream(stream.Context(), stream.Send, none, rs, req, true,
			func() *shoalv1.WatchOperationResponse { return &shoalv1.WatchOperationResponse{} })
	}
	return toStatus(s.ops.Watch(stream.Context(), req.GetId(), func(op *shoalv1.Operation) error {
		return stream.Send(&shoalv1.WatchOperationResponse{Operation: op})
	}))
}

// CancelOperation cancels a running operation.
func (s *Server) CancelOperation(ctx context.Context, req *shoalv1.CancelOperationRequest) (*shoalv1.CancelOperationResponse, error) {
	if oc, octx, err := s.opClient(ctx, req.GetId()); err != nil || oc != nil {
		if err != nil {
			return nil, err
		}
		return oc.CancelOperation(octx, req)
	}
	op, err := s.ops.Cancel(req.GetId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &shoalv1.CancelOperationResponse{Operation: op}, nil
}
