// Package revert undoes the steps of a multi-step operation that failed
// part way, in the reverse order they were done (LXD's revert pattern):
//
//	r := revert.New()
//	defer r.Fail()
//	if err := create(); err != nil {
//		return err
//	}
//	r.Add(func() { remove() })
//	...
//	r.Success() // keep everything
package revert

import "sync"

// Reverter holds the undo steps of an operation in progress.
type Reverter struct {
	mu    sync.Mutex
	steps []func()
	done  bool
}

// New returns an empty Reverter.
func New() *Reverter { return &Reverter{} }

// Add pushes an undo step; Fail runs the last one pushed first.
func (r *Reverter) Add(f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.steps = append(r.steps, f)
}

// Fail runs the undo steps, newest first, unless Success was called. It
// runs them once.
func (r *Reverter) Fail() {
	r.mu.Lock()
	if r.done {
		r.mu.Unlock()
		return
	}
	r.done = true
	steps := r.steps
	r.steps = nil
	r.mu.Unlock()
	for i := len(steps) - 1; i >= 0; i-- {
		steps[i]()
	}
}

// Success drops the undo steps: what was done stays.
func (r *Reverter) Success() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.done = true
	r.steps = nil
}
