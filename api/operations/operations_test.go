package operations

import (
	"context"
	"errors"
	"testing"
	"time"

	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

func TestOperationLifecycle(t *testing.T) {
	bus := NewBus()
	events, done := bus.Subscribe()
	defer done()
	r := NewRegistry(bus, "n1")
	ctx := context.Background()

	release := make(chan struct{})
	op := r.Start("image-build", "images/x", func(ctx context.Context, p *Progress) (map[string]string, error) {
		p.Set("downloading", 5, 10, "packages")
		<-release
		return map[string]string{"fingerprint": "abc"}, nil
	})
	if op.Status != shoalv1.OperationStatus_OPERATION_STATUS_RUNNING || op.Id == "" {
		t.Fatalf("first snapshot = %v", op)
	}
	var phases []string
	watched := make(chan error, 1)
	go func() {
		watched <- r.Watch(ctx, op.Id, func(o *shoalv1.Operation) error {
			if p := o.GetProgress().GetPhase(); p != "" && (len(phases) == 0 || phases[len(phases)-1] != p) {
				phases = append(phases, p)
			}
			if p := o.GetProgress().GetPhase(); p == "downloading" {
				select {
				case <-release:
				default:
					close(release)
				}
			}
			return nil
		})
	}()
	got, err := r.Wait(ctx, op.Id)
	if err != nil || got.Status != shoalv1.OperationStatus_OPERATION_STATUS_SUCCESS || got.Result["fingerprint"] != "abc" {
		t.Fatalf("Wait = %v, %v", got, err)
	}
	if err := <-watched; err != nil {
		t.Fatal(err)
	}
	if len(phases) != 1 || phases[0] != "downloading" {
		t.Fatalf("watched phases = %v", phases)
	}
	// The bus saw the operation start and finish.
	var statuses []shoalv1.OperationStatus
	for len(statuses) < 3 {
		select {
		case e := <-events:
			if e.Type != "operation" || e.Operation.Id != op.Id {
				t.Fatalf("unexpected event %v", e)
			}
			statuses = append(statuses, e.Operation.Status)
		case <-time.After(5 * time.Second):
			t.Fatalf("events so far: %v", statuses)
		}
	}
	if statuses[len(statuses)-1] != shoalv1.OperationStatus_OPERATION_STATUS_SUCCESS {
		t.Fatalf("last event status = %v", statuses)
	}
}

func TestOperationFailureAndCancel(t *testing.T) {
	r := NewRegistry(nil, "n1")
	ctx := context.Background()
	boom := errors.New("boom")
	op := r.Start("x", "y", func(context.Context, *Progress) (map[string]string, error) { return nil, boom })
	got, _ := r.Wait(ctx, op.Id)
	if got.Status != shoalv1.OperationStatus_OPERATION_STATUS_FAILURE || got.Error != "boom" {
		t.Fatalf("failed op = %v", got)
	}
	op = r.Start("x", "y", func(ctx context.Context, _ *Progress) (map[string]string, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	})
	got, err := r.Cancel(op.Id)
	if err != nil || got.Status != shoalv1.OperationStatus_OPERATION_STATUS_CANCELLED {
		t.Fatalf("cancelled op = %v, %v", got, err)
	}
	if _, err := r.Get("nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get unknown = %v", err)
	}
	if ops := r.List(); len(ops) != 2 || ops[0].Id != op.Id {
		t.Fatalf("List = %v (want newest first)", ops)
	}
}
