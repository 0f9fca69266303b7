package operations

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// ErrNotFound is returned for an unknown operation id.
var ErrNotFound = errors.New("operation not found")

// keep is how long finished operations stay listed.
const keep = 10 * time.Minute

// Func is the work of an operation. It reports progress through p and
// returns a result map or an error.
type Func func(ctx context.Context, p *Progress) (map[string]string, error)

// Registry holds operations and publishes their updates as events.
type Registry struct {
	mu   sync.Mutex
	ops  map[string]*op
	bus  *Bus
	node string
}

type op struct {
	pb      *shoalv1.Operation
	cancel  context.CancelFunc
	done    chan struct{}
	changed chan struct{} // closed and replaced on every update
}

// NewRegistry returns an empty registry publishing to bus.
func NewRegistry(bus *Bus, node string) *Registry {
	return &Registry{ops: map[string]*op{}, bus: bus, node: node}
}

// Start runs fn in the background as a new operation and returns its first
// snapshot. The operation's context is detached from the caller's: closing
// the request does not cancel the work; CancelOperation does.
func (r *Registry) Start(kind, resource string, fn Func) *shoalv1.Operation {
	ctx, cancel := context.WithCancel(context.Background())
	now := time.Now().UnixNano()
	o := &op{
		pb: &shoalv1.Operation{
			Id: newID() + "." + r.node, Kind: kind, Resource: resource,
			Status:            shoalv1.OperationStatus_OPERATION_STATUS_RUNNING,
			Progress:          &shoalv1.Progress{Total: -1},
			CreatedAtUnixNano: now, UpdatedAtUnixNano: now,
		},
		cancel: cancel, done: make(chan struct{}), changed: make(chan struct{}),
	}
	r.mu.Lock()
	r.gcLocked()
	r.ops[o.pb.Id] = o
	first := proto.Clone(o.pb).(*shoalv1.Operation)
	r.mu.Unlock()
	r.publish(first)

	go func() {
		defer cancel()
		p := &Progress{r: r, o: o}
		res, err := fn(ctx, p)
		r.mu.Lock()
		o.pb.UpdatedAtUnixNano = time.Now().UnixNano()
		switch {
		case err == nil:
			o.pb.Status = shoalv1.OperationStatus_OPERATION_STATUS_SUCCESS
			o.pb.Result = res
		case ctx.Err() != nil && errors.Is(err, context.Canceled):
			o.pb.Status = shoalv1.OperationStatus_OPERATION_STATUS_CANCELLED
			o.pb.Error = "cancelled"
			o.pb.ErrorCode = 1 // codes.Canceled
		default:
			o.pb.Status = shoalv1.OperationStatus_OPERATION_STATUS_FAILURE
			st := status.Convert(ToStatus(err))
			o.pb.Error = st.Message()
			o.pb.ErrorCode = int32(st.Code())
		}
		snap := proto.Clone(o.pb).(*shoalv1.Operation)
		close(o.changed)
		o.changed = make(chan struct{})
		close(o.done)
		r.mu.Unlock()
		r.publish(snap)
	}()
	return first
}

// ToStatus converts an error to a gRPC status error; it is set by the API
// package so that operations report the same codes as direct calls.
var ToStatus = func(err error) error { return err }

// NodeOf returns the node that runs an operation, from its id ("HEX.NODE").
func NodeOf(id string) string {
	if i := strings.LastIndexByte(id, '.'); i >= 0 {
		return id[i+1:]
	}
	return ""
}

// Get returns an operation's current snapshot.
func (r *Registry) Get(id string) (*shoalv1.Operation, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	o, ok := r.ops[id]
	if !ok {
		return nil, fmt.Errorf("operation %q: %w", id, ErrNotFound)
	}
	return proto.Clone(o.pb).(*shoalv1.Operation), nil
}

// List returns all known operations, newest first.
func (r *Registry) List() []*shoalv1.Operation {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*shoalv1.Operation, 0, len(r.ops))
	for _, o := range r.ops {
		out = append(out, proto.Clone(o.pb).(*shoalv1.Operation))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAtUnixNano > out[j].CreatedAtUnixNano })
	return out
}

// Wait blocks until the operation ends or ctx is done, and returns its
// latest snapshot either way.
func (r *Registry) Wait(ctx context.Context, id string) (*shoalv1.Operation, error) {
	r.mu.Lock()
	o, ok := r.ops[id]
	r.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("operation %q: %w", id, ErrNotFound)
	}
	select {
	case <-o.done:
	case <-ctx.Done():
	}
	return r.Get(id)
}

// Watch calls fn with every update of the operation until it ends.
func (r *Registry) Watch(ctx context.Context, id string, fn func(*shoalv1.Operation) error) error {
	for {
		r.mu.Lock()
		o, ok := r.ops[id]
		if !ok {
			r.mu.Unlock()
			return fmt.Errorf("operation %q: %w", id, ErrNotFound)
		}
		snap := proto.Clone(o.pb).(*shoalv1.Operation)
		changed := o.changed
		r.mu.Unlock()
		if err := fn(snap); err != nil {
			return err
		}
		if snap.Status != shoalv1.OperationStatus_OPERATION_STATUS_RUNNING {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Cancel cancels a running operation and returns its snapshot.
func (r *Registry) Cancel(id string) (*shoalv1.Operation, error) {
	r.mu.Lock()
	o, ok := r.ops[id]
	r.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("operation %q: %w", id, ErrNotFound)
	}
	o.cancel()
	<-o.done
	return r.Get(id)
}

func (r *Registry) gcLocked() {
	cutoff := time.Now().Add(-keep).UnixNano()
	for id, o := range r.ops {
		if o.pb.Status != shoalv1.OperationStatus_OPERATION_STATUS_RUNNING && o.pb.UpdatedAtUnixNano < cutoff {
			delete(r.ops, id)
		}
	}
}

func (r *Registry) publish(o *shoalv1.Operation) {
	if r.bus != nil {
		r.bus.Publish(&shoalv1.Event{Type: "operation", Resource: o.Resource, Action: o.Status.String(), Operation: o, Node: r.node})
	}
}

// Progress lets an operation report how far it has come.
type Progress struct {
	r *Registry
	o *op
}

// Set records a phase and counts; total is -1 when unknown.
func (p *Progress) Set(phase string, done, total int64, unit string) {
	p.r.mu.Lock()
	p.o.pb.Progress = &shoalv1.Progress{Phase: phase, Done: done, Total: total, Unit: unit}
	p.o.pb.UpdatedAtUnixNano = time.Now().UnixNano()
	snap := proto.Clone(p.o.pb).(*shoalv1.Operation)
	close(p.o.changed)
	p.o.changed = make(chan struct{})
	p.r.mu.Unlock()
	p.r.publish(snap)
}

// Phase records a new phase with unknown totals.
func (p *Progress) Phase(phase string) { p.Set(phase, 0, -1, "") }

func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
