// Package api serves Shoal's gRPC services and the REST gateway that maps
// every RPC to an HTTP route. Handlers validate input, write desired state
// through the cluster (Raft), drive the node reconciler, and convert errors
// to gRPC status codes in exactly one place (errors.go). Moves between
// members are driven from here: cold (move.go), live (live.go: the
// protocol and its failure handling), evacuation (evacuate.go).
package api
