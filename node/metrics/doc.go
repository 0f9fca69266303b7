// Package metrics is a member's Prometheus collector: at each scrape (no
// background polling) it reads, for every container the member runs, LXD's
// instance metrics renamed to shoal_ (CPU, memory, processes, network and
// block I/O, labelled name=<container>, type="container") from the
// container's cgroup files (v1, or v2 where the container's cgroup is
// unified) and /proc/<init>/net/dev; and the member's own figures: Raft
// state and indexes, apply latency (RaftSink, fed by hashicorp/raft's
// go-metrics calls), gossip members, running operations and its
// containers by state.
//
// It sees the member only through Source (which containers run here, with
// their init pids; the member's figures), so tests feed fakes over a fake
// /proc and cgroup tree. It only reads: it never writes a cgroup file or
// touches a container, and it owns no listener (api serves /metrics).
package metrics
