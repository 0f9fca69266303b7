// Package storagetest is the conformance suite every storage.Driver passes,
// in the style of containerd's snapshotter test suite: a driver's own test
// calls Run with a constructor for fresh, empty pools, and the suite checks
// the semantics the rest of Shoal relies on (naming, create/clone/snapshot/
// restore/delete/list, error sentinels, full-fidelity copies of special
// files, send and receive between two pools, usage and quotas).
//
// It needs root (it creates device nodes and files owned by other users).
package storagetest
