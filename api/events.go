package api

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// eventTypes are the event types a stream can ask for.
var eventTypes = map[string]bool{"lifecycle": true, "operation": true, "logging": true}

// StreamEvents streams events until the client leaves: this member's own,
// and, unless the call was forwarded here by another member, every other
// member's, merged as they arrive (each event names its member). Members
// that join, die or come back are followed: a member that does not answer
// is tried again every second, and its events meanwhile are lost, as a
// subscriber's that falls behind.
func (s *Server) StreamEvents(req *shoalv1.StreamEventsRequest, stream shoalv1.EventService_StreamEventsServer) error {
	want := map[string]bool{}
	for _, t := range req.GetTypes() {
		if !eventTypes[t] {
			return invalid("types", fmt.Sprintf("%q is not an event type (allowed: lifecycle, operation, logging)", t))
		}
		want[t] = true
	}
	ctx := stream.Context()
	ch, done := s.bus.Subscribe()
	defer done()
	remote := make(chan *shoalv1.Event, 256)
	if s.peers != nil && !forwarded(ctx) {
		go s.relayMembers(ctx, req, remote)
	}
	// Tell the client the subscription is live (headers), so it can rely on
	// receiving everything that happens here from now on.
	if err := stream.SendHeader(nil); err != nil {
		return err
	}
	for {
		var e *shoalv1.Event
		select {
		case <-ctx.Done():
			return nil
		case e = <-ch:
			if len(want) > 0 && !want[e.GetType()] {
				continue
			}
			if e.GetNode() == "" {
				e = proto.Clone(e).(*shoalv1.Event) // shared with other subscribers
				e.Node = s.node.Name()
			}
		case e = <-remote:
		}
		if err := stream.Send(&shoalv1.StreamEventsResponse{Event: e}); err != nil {
			return err
		}
	}
}

// relayMembers streams every other member's own events into out until ctx
// ends, one stream per member, started for members as they appear and
// again after a stream ends.
func (s *Server) relayMembers(ctx context.Context, req *shoalv1.StreamEventsRequest, out chan<- *shoalv1.Event) {
	var mu sync.Mutex
	running := map[string]bool{}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		for _, n := range s.fsm.Nodes() {
			name := n.GetName()
			mu.Lock()
			busy := running[name]
			if !busy && name != s.node.Name() {
				running[name] = true
			}
			mu.Unlock()
			if busy || name == s.node.Name() {
				continue
			}
			go func() {
				s.relayMember(ctx, name, req, out)
				mu.Lock()
				delete(running, name)
				mu.Unlock()
			}()
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// relayMember copies one member's own events into out until its stream or
// ctx ends.
func (s *Server) relayMember(ctx context.Context, name string, req *shoalv1.StreamEventsRequest, out chan<- *shoalv1.Event) {
	conn, err := s.memberConn(name)
	if err != nil {
		return
	}
	st, err := shoalv1.NewEventServiceClient(conn).StreamEvents(s.outgoing(ctx), req)
	if err != nil {
		return
	}
	for {
		resp, err := st.Recv()
		if err != nil {
			return
		}
		e := resp.GetEvent()
		if e.GetNode() == "" {
			e.Node = name
		}
		select {
		case out <- e:
		case <-ctx.Done():
			return
		default: // the client fell behind: drop, as the bus does
		}
	}
}
