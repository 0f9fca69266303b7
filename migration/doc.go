// Package migration moves container state between members: today the
// volume stream of a cold move (each snapshot's driver send stream, oldest
// first and incremental on the one before, chunked, with a size and sha256
// per stream checked by the receiver). Live moves (CRIU images, lazy pages)
// join it with the migration issue.
//
// It sees storage drivers and io only; the gRPC plumbing stays in api.
package migration
