package failpoint

import (
	"errors"
	"testing"
	"time"
)

func TestParseAndHit(t *testing.T) {
	mu.Lock()
	points = parse("a=error; b=once:error;c=sleep(20ms);bad=nope;d=sleep(x)")
	mu.Unlock()
	if err := Hit("a"); !errors.Is(err, ErrInjected) {
		t.Fatalf("a: %v", err)
	}
	if err := Hit("a"); !errors.Is(err, ErrInjected) {
		t.Fatalf("a fires every time: %v", err)
	}
	if err := Hit("b"); !errors.Is(err, ErrInjected) {
		t.Fatalf("b first: %v", err)
	}
	if err := Hit("b"); err != nil {
		t.Fatalf("b is once: %v", err)
	}
	t0 := time.Now()
	if err := Hit("c"); err != nil || time.Since(t0) < 20*time.Millisecond {
		t.Fatalf("c: %v after %v", err, time.Since(t0))
	}
	for _, n := range []string{"bad", "d", "unknown"} {
		if Armed(n) || Hit(n) != nil {
			t.Fatalf("%s should be unarmed", n)
		}
	}
}
