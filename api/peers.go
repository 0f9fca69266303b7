package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/cluster"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// Peers keeps gRPC connections to other members, authenticated with this
// member's node certificate; it forwards writes to the leader.
type Peers = peers

type peers struct {
	fsm   *cluster.FSM
	creds *cluster.Credentials
	mu    sync.Mutex
	conns map[string]*grpc.ClientConn // by address
}

// ConnectPeers makes the connection pool to other members and installs it
// as the cluster's forwarder of writes to the leader.
func ConnectPeers(cl *cluster.Cluster, creds *cluster.Credentials) *Peers {
	p := &peers{fsm: cl.FSM(), creds: creds, conns: map[string]*grpc.ClientConn{}}
	cl.SetForwarder(p.forward, p.readIndex)
	return p
}

// readIndex asks the leader for its read index.
func (p *peers) readIndex(ctx context.Context, leader string) (uint64, error) {
	c, err := p.conn(leader)
	if err != nil {
		return 0, err
	}
	resp, err := shoalv1.NewClusterServiceClient(c).ReadIndex(ctx, &shoalv1.ReadIndexRequest{})
	if err != nil {
		return 0, err
	}
	return resp.GetIndex(), nil
}

// Healthy reports whether a member answers the gRPC health check.
func (p *peers) Healthy(ctx context.Context, name string) bool {
	c, err := p.conn(name)
	if err != nil {
		return false
	}
	resp, err := healthpb.NewHealthClient(c).Check(ctx, &healthpb.HealthCheckRequest{})
	return err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING
}

// reconnectWait bounds how long a call waits for a member that was
// unreachable to be redialled.
const reconnectWait = time.Second

// conn returns a connection to a member by node name.
func (p *peers) conn(name string) (*grpc.ClientConn, error) {
	if p.creds == nil {
		return nil, fmt.Errorf("member %q: this node has no cluster credentials", name)
	}
	n, err := p.fsm.Node(name)
	if err != nil {
		return nil, err
	}
	if n.GetAddress() == "" {
		return nil, fmt.Errorf("member %q has no gRPC address", name)
	}
	p.mu.Lock()
	c, ok := p.conns[n.GetAddress()]
	p.mu.Unlock()
	if ok {
		if c.GetState() == connectivity.TransientFailure {
			// The member was unreachable: try it now rather than after the
			// backoff, and give that attempt a moment, so a call right after
			// the member came back reaches it instead of failing with the
			// last attempt's error.
			c.ResetConnectBackoff()
			ctx, cancel := context.WithTimeout(context.Background(), reconnectWait)
			for st := c.GetState(); st != connectivity.Ready && c.WaitForStateChange(ctx, st); st = c.GetState() {
			}
			cancel()
		}
		return c, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.conns[n.GetAddress()]; ok {
		return c, nil
	}
	c, err = grpc.NewClient(n.GetAddress(), grpc.WithTransportCredentials(credentials.NewTLS(p.creds.ClientTLS())),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16<<20)),
		// A member cut off mid-stream is noticed in seconds, not after
		// TCP's retransmissions give up: a broken transfer fails fast.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 5 * time.Second, Timeout: 5 * time.Second}),
		// A member that was down is redialled at least every second (gRPC's
		// default backoff grows to two minutes, during which every call to
		// it fails at once with the old error).
		grpc.WithConnectParams(grpc.ConnectParams{MinConnectTimeout: 2 * time.Second,
			Backoff: backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second}}))
	if err != nil {
		return nil, fmt.Errorf("dial member %q at %s: %w", name, n.GetAddress(), err)
	}
	p.conns[n.GetAddress()] = c
	return c, nil
}

// forward is the cluster's Forwarder: it applies a command on the leader.
// A member that just started may learn who leads before its log replay has
// reached the leader's record: it waits for the record.
func (p *peers) forward(ctx context.Context, leader string, command []byte) (uint64, error) {
	c, err := p.conn(leader)
	for errors.Is(err, cluster.ErrNotFound) {
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("forward to leader %s: %w", leader, err)
		case <-time.After(50 * time.Millisecond):
		}
		c, err = p.conn(leader)
	}
	if err != nil {
		return 0, err
	}
	resp, err := shoalv1.NewClusterServiceClient(c).Apply(ctx, &shoalv1.ApplyRequest{Command: command})
	switch status.Code(err) {
	case codes.OK:
		return resp.GetIndex(), nil
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
		// The leader was not reached: say so, rather than how gRPC noticed.
		return 0, status.Errorf(codes.Unavailable, "cannot reach the cluster leader %s to commit the change (no quorum on this side?): %s",
			leader, status.Convert(err).Message())
	}
	return 0, err
}

// Close closes the connections.
func (p *peers) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
}

// FetchImage copies image fp's tarball from a member that holds it into w
// (the node verifies the sha256 as it stores it).
func (p *peers) FetchImage(ctx context.Context, fp string, w io.Writer) error {
	var errs []error
	for _, img := range p.fsm.Images() {
		if img.GetFingerprint() != fp {
			continue
		}
		for _, holder := range img.GetNodes() {
			if err := p.fetchFrom(ctx, holder, fp, w); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", holder, err))
				continue
			}
			return nil
		}
	}
	if len(errs) == 0 {
		return fmt.Errorf("image %.12s: no member holds it", fp)
	}
	return fmt.Errorf("image %.12s: %w", fp, errors.Join(errs...))
}

func (p *peers) fetchFrom(ctx context.Context, holder, fp string, w io.Writer) error {
	c, err := p.conn(holder)
	if err != nil {
		return err
	}
	stream, err := shoalv1.NewImageServiceClient(c).ExportImage(ctx, &shoalv1.ExportImageRequest{Image: fp})
	if err != nil {
		return err
	}
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if d := resp.GetData(); d != nil {
			if _, err := w.Write(d); err != nil {
				return err
			}
		}
	}
}
