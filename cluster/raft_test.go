package cluster

import (
	"context"
	"errors"
	"testing"
	"time"

	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// TestRestartKeepsState runs a real one-node Raft cluster on a loopback
// socket, writes, snapshots, writes more, restarts it from the same data dir
// and checks that every write survived.
func TestRestartKeepsState(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := Config{NodeName: "n1", DataDir: dir, BindAddr: "127.0.0.1:0"}
	c, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a1", "a2"} {
		if err := c.Propose(ctx, &shoalv1.ContainerCreateCommand{Container: &shoalv1.Container{Name: name, Node: "n1"}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Propose(ctx, &shoalv1.ContainerCreateCommand{Container: &shoalv1.Container{Name: "a1"}}); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate create through raft: %v", err)
	}
	if err := c.Snapshot(); err != nil {
		t.Fatal(err)
	}
	if err := c.Propose(ctx, &shoalv1.ContainerDeleteCommand{Name: "a2"}); err != nil {
		t.Fatal(err)
	}
	if err := c.Propose(ctx, &shoalv1.ContainerCreateCommand{Container: &shoalv1.Container{Name: "a3", Node: "n1"}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	c, err = Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var names []string
	for _, ct := range c.FSM().Containers() {
		names = append(names, ct.Name)
	}
	if len(names) != 2 || names[0] != "a1" || names[1] != "a3" {
		t.Fatalf("after restart containers = %v, want [a1 a3]", names)
	}
	if err := c.Propose(ctx, &shoalv1.ContainerCreateCommand{Container: &shoalv1.Container{Name: "a4", Node: "n1"}}); err != nil {
		t.Fatalf("write after restart: %v", err)
	}
}
