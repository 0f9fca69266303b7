package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// A CommandBatch entry applies its commands in order, each with the
// verdict it would have had in an entry of its own: a name taken by an
// earlier command of the same batch, and a compare-and-set computed on a
// revision the batch changed, are refused; the rest apply.
func TestCommandBatchVerdicts(t *testing.T) {
	f := NewFSM()
	mustApply(t, f, &shoalv1.ContainerCreateCommand{Container: &shoalv1.Container{Name: "c0"}})
	ct, _ := f.Container("c0")
	rev := ct.GetRevision()
	batch := &shoalv1.CommandBatch{}
	for _, m := range []proto.Message{
		&shoalv1.ContainerCreateCommand{Container: &shoalv1.Container{Name: "c1"}},
		&shoalv1.ContainerCreateCommand{Container: &shoalv1.Container{Name: "c1"}},
		&shoalv1.ContainerUpdateCommand{Name: "c0", IfRevision: &rev, Config: map[string]string{"user.a": "1"}},
		&shoalv1.ContainerUpdateCommand{Name: "c0", IfRevision: &rev, Config: map[string]string{"user.a": "2"}},
		&shoalv1.ContainerCreateCommand{Container: &shoalv1.Container{Name: "c2"}},
	} {
		data, err := Encode(m)
		if err != nil {
			t.Fatal(err)
		}
		batch.Commands = append(batch.Commands, data)
	}
	data, err := Encode(batch)
	if err != nil {
		t.Fatal(err)
	}
	res, ok := f.Apply(&raft.Log{Index: 7, Type: raft.LogCommand, Data: data}).(BatchResult)
	if !ok || len(res) != 5 {
		t.Fatalf("batch answered %v", res)
	}
	if res[0] != nil || !errors.Is(res[1], ErrExists) || res[2] != nil || !errors.Is(res[3], ErrStale) || res[4] != nil {
		t.Fatalf("verdicts %v, want nil, ErrExists, nil, ErrStale, nil", res)
	}
	got, _ := f.Container("c0")
	if got.GetConfig()["user.a"] != "1" || got.GetRevision() != rev+1 {
		t.Fatalf("c0 after the batch: %v revision %d", got.GetConfig(), got.GetRevision())
	}
	if _, err := f.Container("c2"); err != nil || f.Applied() != 7 {
		t.Fatalf("c2: %v; applied %d", err, f.Applied())
	}
	// A batch inside a batch is a bug: the FSM fails loudly.
	nested, _ := Encode(&shoalv1.CommandBatch{Commands: [][]byte{data}})
	defer func() {
		if recover() == nil {
			t.Fatal("a nested batch applied")
		}
	}()
	f.Apply(&raft.Log{Index: 8, Type: raft.LogCommand, Data: nested})
}

// Concurrent creates on a leader are batched into shared entries, yet
// each caller gets its own verdict: of two creates of one name exactly
// one succeeds, and every other create is recorded.
func TestProposeBatchedVerdicts(t *testing.T) {
	ctx := context.Background()
	c, err := Open(ctx, Config{NodeName: "n1", DataDir: t.TempDir(), BindAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const n = 400
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.Propose(ctx, &shoalv1.ContainerCreateCommand{Container: &shoalv1.Container{Name: fmt.Sprintf("c%d", i/2)}})
		}()
	}
	wg.Wait()
	for i := 0; i < n; i += 2 {
		a, b := errs[i], errs[i+1]
		if (a == nil) == (b == nil) || (a != nil && !errors.Is(a, ErrExists)) || (b != nil && !errors.Is(b, ErrExists)) {
			t.Fatalf("c%d created twice: %v, %v", i/2, a, b)
		}
	}
	if got := len(c.FSM().Containers()); got != n/2 {
		t.Fatalf("%d containers recorded, want %d", got, n/2)
	}
	t.Logf("%d creates in the log up to index %s", n, c.RaftStats()["last_log_index"])
}
