// Package client is a small Go client for Shoal's gRPC API: it dials a
// daemon (unix socket or TCP), exposes the generated service stubs, and adds
// helpers for the streaming calls (exec, files, images) and for waiting on
// operations with progress.
package client
