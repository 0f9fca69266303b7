package harness

import (
	"fmt"
	"os"
	"sync"
)

// Program is a T for plain programs (benchmarks, demos): failures print to
// stderr, and Fatalf runs the cleanups and exits.
type Program struct {
	mu       sync.Mutex
	cleanups []func()
	failed   bool
}

// Helper does nothing.
func (p *Program) Helper() {}

// Logf prints a line to stderr.
func (p *Program) Logf(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }

// Errorf records a failure and prints it.
func (p *Program) Errorf(f string, a ...any) {
	p.mu.Lock()
	p.failed = true
	p.mu.Unlock()
	p.Logf(f, a...)
}

// Failed reports whether Errorf or Fatalf was called.
func (p *Program) Failed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.failed
}

// Cleanup registers f to run at Close (last registered first).
func (p *Program) Cleanup(f func()) {
	p.mu.Lock()
	p.cleanups = append(p.cleanups, f)
	p.mu.Unlock()
}

// Fatalf prints, cleans up and exits with status 1.
func (p *Program) Fatalf(f string, a ...any) {
	p.Errorf(f, a...)
	p.Close()
	os.Exit(1)
}

// Close runs the cleanups.
func (p *Program) Close() {
	p.mu.Lock()
	cs := p.cleanups
	p.cleanups = nil
	p.mu.Unlock()
	for i := len(cs) - 1; i >= 0; i-- {
		cs[i]()
	}
}
