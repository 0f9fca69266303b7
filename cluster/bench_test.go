package cluster

import (
	"context"
	"fmt"
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// BenchmarkPropose measures one replicated write on a one-node cluster
// (Raft apply with the log fsynced by raft-boltdb).
func BenchmarkPropose(b *testing.B) {
	ctx := context.Background()
	c, err := Open(ctx, Config{NodeName: "n1", DataDir: b.TempDir(), BindAddr: "127.0.0.1:0"})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := c.Propose(ctx, &shoalv1.ContainerCreateCommand{Container: &shoalv1.Container{Name: fmt.Sprintf("c%d", i)}}); err != nil {
			b.Fatal(err)
		}
	}
}
