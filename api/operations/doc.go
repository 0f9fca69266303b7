// Package operations keeps the daemon's long-running operations (image
// builds, launches, copies, publishes) and its event bus: each operation has
// an id, progress, a result, and can be waited on, watched and cancelled.
// Operations live in memory on the node that runs them.
package operations
