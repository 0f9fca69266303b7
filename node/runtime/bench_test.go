package runtime

import (
	"context"
	"testing"
)

// Benchmarks print figures; they assert nothing about time.

func BenchmarkStart(b *testing.B) {
	rt := newRuntime(b)
	spec := testContainer(b, rt, true, false, nil)
	ctx := context.Background()
	for b.Loop() {
		if err := rt.Start(ctx, spec.Name); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := rt.Stop(ctx, spec.Name, 0); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

func BenchmarkStopForce(b *testing.B) {
	rt := newRuntime(b)
	spec := testContainer(b, rt, true, false, nil)
	ctx := context.Background()
	for b.Loop() {
		b.StopTimer()
		if err := rt.Start(ctx, spec.Name); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := rt.Stop(ctx, spec.Name, 0); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkExecTrue(b *testing.B) {
	rt := newRuntime(b)
	spec := testContainer(b, rt, true, true, nil)
	ctx := context.Background()
	req := ExecRequest{Cmd: []string{"true"}}
	for b.Loop() {
		code, err := rt.Exec(ctx, spec.Name, req)
		if err != nil || code != 0 {
			b.Fatalf("exec: %d %v", code, err)
		}
	}
}

func BenchmarkExecTrueUnprivileged(b *testing.B) {
	rt := newRuntime(b)
	spec := testContainer(b, rt, false, true, nil)
	ctx := context.Background()
	req := ExecRequest{Cmd: []string{"true"}}
	for b.Loop() {
		code, err := rt.Exec(ctx, spec.Name, req)
		if err != nil || code != 0 {
			b.Fatalf("exec: %d %v", code, err)
		}
	}
}

func BenchmarkExecTTY(b *testing.B) {
	rt := newRuntime(b)
	spec := testContainer(b, rt, true, true, nil)
	ctx := context.Background()
	req := ExecRequest{Cmd: []string{"true"}, TTY: true}
	for b.Loop() {
		code, err := rt.Exec(ctx, spec.Name, req)
		if err != nil || code != 0 {
			b.Fatalf("exec: %d %v", code, err)
		}
	}
}
