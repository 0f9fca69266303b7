// Package jepsen checks that Shoal's cluster state is linearizable while
// members crash, pause and lose their links: a Jepsen-style harness over
// real shoald daemons on simulated hosts (tests/harness, tests/netns), with
// github.com/anishathalye/porcupine as the checker.
//
// What it owns: the models (model.go: a register per config key, a set per
// collection — containers, a container's snapshots), the history recorder
// (history.go), the workload of concurrent clients against every member
// (workload.go), the fault schedule drawn from a seed (faults.go) and a run
// that ties them together and checks the result (run.go). Containers,
// keys and snapshots it creates carry the run's prefix ("jp" + seed + ...);
// it never touches anything else in the cluster.
//
// How an operation is recorded: its invocation and response times (one
// monotonic clock per run). A call that failed with a definite error (the
// daemon refused it: invalid, not found, already exists, precondition) is
// dropped, since it changed nothing; a call that timed out or failed
// otherwise may or may not have taken effect and is recorded as pending
// (porcupine's infinite return time). Reads that fail are dropped. Every
// call has a deadline (CallTimeout); one that returns after it is itself a
// finding.
//
// What it must not do: change product code, leave a process SIGSTOPped, or
// leave a link cut (every fault is undone when the run ends, even on
// failure).
package jepsen
