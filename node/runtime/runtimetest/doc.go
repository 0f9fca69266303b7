// Package runtimetest holds test helpers for code that runs real LXC
// containers: prerequisite checks that fail under CI=true and skip (saying
// what is missing) elsewhere, and a minimal busybox root filesystem built
// from the host's static busybox.
package runtimetest
