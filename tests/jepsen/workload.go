package jepsen

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/api/client"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// keyName is the config key of a container's i-th register.
func keyName(i int) string { return fmt.Sprintf("user.k%d", i) }

// containersSet is the object name of the set of the run's created
// containers.
const containersSet = "containers"

// snapSet is the object name of a register container's snapshots.
func snapSet(ct string) string { return "snap:" + ct }

// workload is the objects of one run and the ops the clients pick from.
type workload struct {
	prefix    string   // every name of the run starts with it
	registers []string // containers whose config keys are registers
	keys      int      // registers per container
	image     string
	timeout   time.Duration

	mu      sync.Mutex
	created []string // creates acknowledged or pending, not yet deleted
	seq     int
}

// weights of the ops a client picks (out of their sum).
var weights = []struct {
	kind Kind
	set  string // "" for registers, containersSet, or "snap"
	w    int
}{
	{Write, "", 34}, {Read, "", 30},
	{Add, containersSet, 7}, {Remove, containersSet, 5}, {List, containersSet, 10},
	{Add, "snap", 6}, {List, "snap", 8},
}

// next picks a client's next operation.
func (w *workload) next(rng *rand.Rand, client int) Input {
	total := 0
	for _, x := range weights {
		total += x.w
	}
	n := rng.IntN(total)
	var pick int
	for i, x := range weights {
		if n < x.w {
			pick = i
			break
		}
		n -= x.w
	}
	x := weights[pick]
	ct := w.registers[rng.IntN(len(w.registers))]
	w.mu.Lock()
	defer w.mu.Unlock()
	w.seq++
	switch {
	case x.set == "":
		key := ct + "/" + keyName(rng.IntN(w.keys))
		if x.kind == Write {
			return Input{Kind: Write, Key: key, Value: fmt.Sprintf("c%d-%d", client, w.seq)}
		}
		return Input{Kind: Read, Key: key}
	case x.set == containersSet && x.kind == Add:
		name := fmt.Sprintf("%ss%d", w.prefix, w.seq)
		w.created = append(w.created, name)
		return Input{Kind: Add, Key: containersSet, Value: name}
	case x.set == containersSet && x.kind == Remove && len(w.created) > 0:
		i := rng.IntN(len(w.created))
		name := w.created[i]
		w.created = append(w.created[:i], w.created[i+1:]...)
		return Input{Kind: Remove, Key: containersSet, Value: name}
	case x.set == containersSet:
		return Input{Kind: List, Key: containersSet}
	case x.kind == Add:
		return Input{Kind: Add, Key: snapSet(ct), Value: fmt.Sprintf("s%d", w.seq)}
	default:
		return Input{Kind: List, Key: snapSet(ct)}
	}
}

// do runs one operation through c within the call's deadline.
func (w *workload) do(ctx context.Context, c *client.Client, in Input) (Output, error) {
	ctx, cancel := context.WithTimeout(ctx, w.timeout)
	defer cancel()
	switch {
	case in.Kind == Write:
		ct, key, _ := strings.Cut(in.Key, "/")
		_, err := c.Containers.UpdateContainer(ctx, &shoalv1.UpdateContainerRequest{Name: ct, Set: map[string]string{key: in.Value}})
		return Output{}, err
	case in.Kind == Read:
		ct, key, _ := strings.Cut(in.Key, "/")
		resp, err := c.Containers.GetContainer(ctx, &shoalv1.GetContainerRequest{Name: ct})
		if err != nil {
			return Output{}, err
		}
		return Output{Value: resp.GetContainer().GetContainer().GetConfig()[key]}, nil
	case in.Key == containersSet && in.Kind == Add:
		resp, err := c.Containers.CreateContainer(ctx, &shoalv1.CreateContainerRequest{Name: in.Value, Image: w.image, NoStart: true})
		if err != nil {
			return Output{}, err
		}
		_, err = c.Wait(ctx, resp.GetOperation(), nil)
		return Output{}, err
	case in.Key == containersSet && in.Kind == Remove:
		_, err := c.Containers.DeleteContainer(ctx, &shoalv1.DeleteContainerRequest{Name: in.Value, Force: true})
		return Output{}, err
	case in.Key == containersSet && in.Kind == List:
		resp, err := c.Containers.ListContainers(ctx, &shoalv1.ListContainersRequest{})
		if err != nil {
			return Output{}, err
		}
		out := Output{Elems: []string{}}
		for _, info := range resp.GetContainers() {
			if n := info.GetContainer().GetName(); strings.HasPrefix(n, w.prefix+"s") {
				out.Elems = append(out.Elems, n)
			}
		}
		return out, nil
	case in.Kind == Add: // a snapshot
		ct := strings.TrimPrefix(in.Key, "snap:")
		_, err := c.Containers.CreateSnapshot(ctx, &shoalv1.CreateSnapshotRequest{Container: ct, Name: in.Value})
		return Output{}, err
	case in.Kind == List:
		ct := strings.TrimPrefix(in.Key, "snap:")
		resp, err := c.Containers.ListSnapshots(ctx, &shoalv1.ListSnapshotsRequest{Container: ct})
		if err != nil {
			return Output{}, err
		}
		out := Output{Elems: []string{}}
		for _, sn := range resp.GetSnapshots() {
			out.Elems = append(out.Elems, sn.GetName())
		}
		return out, nil
	}
	return Output{}, fmt.Errorf("no such operation %v", in)
}

// classify says what a call's error means for its effect. Only refusals
// the daemon makes before it proposes anything are definite; everything
// else (unavailable, deadline, aborted, internal, and even not-found or
// already-exists, which a write forwarded again after its first leader
// died can get although its first attempt committed) may have taken
// effect.
func classify(err error) Outcome {
	if err == nil {
		return OK
	}
	code := status.Code(err)
	var ce *client.Error
	if errors.As(err, &ce) {
		code = ce.Code
	}
	switch code {
	case codes.InvalidArgument, codes.PermissionDenied, codes.Unauthenticated, codes.Unimplemented, codes.ResourceExhausted:
		return Failed
	}
	return Unknown
}
