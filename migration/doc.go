// Package migration is the move engine: every way a container travels
// between members runs here, as one explicit state machine per kind (cold
// move, live move in stop-and-copy or post-copy, local and remote copy,
// refresh) and the evacuation plan over moves. One type per side: Source
// runs Move, LiveMove, Copy, Refresh, Evacuate and RestoreMember; Target
// takes the streams the target's RPC handlers hand it (Restore, Receive).
//
// Each machine (machine.go) is a list of steps named by Phase, each with
// its failpoint and what it does; a step pushes the undo of what it did
// (internal/revert), run newest first when a later step fails before the
// commit, and the cleanups that run whatever happens. Plans lists each
// kind's phases; docs/ARCHITECTURE.md has what is true on each side at
// each phase and what a failure there undoes.
//
// The engine sees the host, Raft, the peers, progress and events only
// through the small interfaces it declares (engine.go), so unit tests
// drive every phase and failure with fakes; api/engine.go wires the real
// ones. Below the machines are the stream codecs: the volume stream (each
// snapshot's driver send stream, oldest first and incremental on the one
// before or on a base the receiver already holds, chunked, with a size and
// sha256 per stream checked by the receiver), the checkpoint stream
// (CRIU's image directory as a tar, checked the same way), and the page
// counts of a CRIU checkpoint (ReadDumpStats).
package migration
