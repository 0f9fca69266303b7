// Package migration moves container state between members: the volume
// stream of moves and copies (each snapshot's driver send stream, oldest
// first and incremental on the one before or on a base the receiver
// already holds, chunked, with a size and sha256 per stream checked by the
// receiver), the checkpoint stream of live moves (CRIU's image directory
// as a tar, checked the same way), and the page counts of a CRIU
// checkpoint (ReadDumpStats).
//
// It sees storage drivers, files and io only; the gRPC plumbing and the
// live-move protocol (api/live.go) stay in api.
package migration
