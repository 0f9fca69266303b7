// Package api serves Shoal's gRPC services and the REST gateway that maps
// every RPC to an HTTP route. Handlers validate input, write desired state
// through the cluster (Raft), drive the node reconciler, and convert errors
// to gRPC status codes in exactly one place (errors.go).
package api
