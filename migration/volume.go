package migration

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"

	"golang.org/x/sys/unix"

	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
	"github.com/shoal-dev/shoal/storage"
)

// Version is the volume stream protocol version this code speaks.
const Version = 1

// chunk is the payload size of one part.
const chunk = 256 << 10

// ErrCorrupt marks a stream whose size or checksum does not match.
var ErrCorrupt = errors.New("volume stream corrupt")

// SendVolume sends snapshots of vol (oldest first; each after the first is
// sent incrementally on the one before) as parts through send. It returns
// the bytes of stream data sent.
func SendVolume(ctx context.Context, d storage.Driver, vol string, snaps []string, send func(*shoalv1.VolumePart) error) (int64, error) {
	return SendVolumeFrom(ctx, d, vol, "", snaps, send)
}

// SendVolumeFrom is SendVolume with the first snapshot sent incrementally
// on base, a snapshot the receiver already holds (base "" sends it whole).
func SendVolumeFrom(ctx context.Context, d storage.Driver, vol, base string, snaps []string, send func(*shoalv1.VolumePart) error) (int64, error) {
	var total int64
	parent := base
	for _, snap := range snaps {
		// An OS pipe, not io.Pipe: a driver that runs a tool (btrfs send)
		// hands it the write end, and the tool writes into it with no copy
		// through a goroutine.
		pr, pw, err := newPipe()
		if err != nil {
			return total, fmt.Errorf("send %s@%s: %w", vol, snap, err)
		}
		sendErr := make(chan error, 1)
		go func() {
			err := d.Send(ctx, vol, snap, parent, pw)
			pw.Close()
			sendErr <- err
		}()
		// Read ahead while the previous chunk is being sent, so the driver's
		// send and the transport work at the same time.
		chunks := make(chan []byte, 8)
		readErr := make(chan error, 1)
		go func() {
			defer close(chunks)
			for {
				buf := make([]byte, chunk)
				n, err := io.ReadFull(pr, buf)
				if n > 0 {
					chunks <- buf[:n]
				}
				if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
					readErr <- nil
					return
				}
				if err != nil {
					readErr <- err
					return
				}
			}
		}()
		h := sha256.New()
		var size int64
		for data := range chunks {
			h.Write(data)
			size += int64(len(data))
			if serr := send(&shoalv1.VolumePart{Snapshot: snap, Data: data}); serr != nil {
				pr.Close() // the driver's writes fail from here on
				for range chunks {
				}
				<-sendErr
				return total, fmt.Errorf("send %s@%s: %w", vol, snap, serr)
			}
		}
		rerr := <-readErr
		pr.Close()
		if err := errors.Join(<-sendErr, rerr); err != nil {
			return total, fmt.Errorf("send %s@%s: %w", vol, snap, err)
		}
		if err := send(&shoalv1.VolumePart{Snapshot: snap, End: true, Size: size, Sha256: hex.EncodeToString(h.Sum(nil))}); err != nil {
			return total, fmt.Errorf("send %s@%s: %w", vol, snap, err)
		}
		total += size
		parent = snap
	}
	return total, nil
}

// newPipe returns an OS pipe with a 1 MiB buffer (where the system
// allows), so a tool on one end and the transport on the other do not
// wait on each other at every 64 KiB.
func newPipe() (*os.File, *os.File, error) {
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	_, _ = unix.FcntlInt(pw.Fd(), unix.F_SETPIPE_SZ, 1<<20)
	return pr, pw, nil
}

// Receiver applies a volume stream to a driver.
type Receiver struct {
	d     storage.Driver
	vol   string
	snaps []string
	drop  []string
	keep  bool // Abort keeps the volume (a refresh of an existing copy)
	next  int

	pw     *os.File           // the driver reads the other end
	cancel context.CancelFunc // aborts the driver's receive
	done   chan error         // the driver's receive finished
	data   chan []byte
	wrote  chan error // the writer goroutine finished
	sum    hash.Hash
	size   int64
	total  int64
}

// NewReceiver prepares to receive the snapshots a header announces into
// vol. The caller deletes vol with Abort if the stream fails.
func NewReceiver(d storage.Driver, vol string, h *shoalv1.VolumeHeader) (*Receiver, error) {
	if h.GetVersion() != Version {
		return nil, fmt.Errorf("volume stream version %d: this member speaks %d", h.GetVersion(), Version)
	}
	if len(h.GetSnapshots()) == 0 {
		return nil, errors.New("volume stream announces no snapshots")
	}
	drop := h.GetDrop()
	if h.GetDropLast() {
		drop = append(drop, h.GetSnapshots()[len(h.GetSnapshots())-1])
	}
	// A refresh, or an increment to a replica, keeps the volume it adds to
	// when it fails.
	keep := h.GetResume() || h.GetReplica() && h.GetBase() != ""
	return &Receiver{d: d, vol: vol, snaps: h.GetSnapshots(), drop: drop, keep: keep}, nil
}

// Apply consumes one part.
func (r *Receiver) Apply(ctx context.Context, p *shoalv1.VolumePart) error {
	if r.next >= len(r.snaps) || p.GetSnapshot() != r.snaps[r.next] {
		return fmt.Errorf("%w: part of snapshot %q out of order", ErrCorrupt, p.GetSnapshot())
	}
	if r.pw == nil {
		if err := r.start(ctx, p.GetSnapshot()); err != nil {
			return fmt.Errorf("receive %s@%s: %w", r.vol, p.GetSnapshot(), err)
		}
	}
	if len(p.GetData()) > 0 {
		r.sum.Write(p.GetData())
		r.size += int64(len(p.GetData()))
		select {
		case r.data <- p.GetData():
		case err := <-r.wrote:
			// The receiving side failed: collect its error.
			return fmt.Errorf("receive %s@%s: %w", r.vol, p.GetSnapshot(), r.stop(err))
		}
	}
	if !p.GetEnd() {
		return nil
	}
	got := hex.EncodeToString(r.sum.Sum(nil))
	if r.size != p.GetSize() || got != p.GetSha256() {
		r.stop(ErrCorrupt)
		return fmt.Errorf("%w: snapshot %s: %d bytes sha256 %.12s, sender sent %d bytes sha256 %.12s",
			ErrCorrupt, p.GetSnapshot(), r.size, got, p.GetSize(), p.GetSha256())
	}
	if err := r.stop(nil); err != nil {
		return fmt.Errorf("receive %s@%s: %w", r.vol, p.GetSnapshot(), err)
	}
	r.total += r.size
	r.next++
	return nil
}

// start begins receiving one snapshot: the driver reads a pipe that a
// writer goroutine fills from a buffered channel, so the transport and the
// driver work at the same time.
func (r *Receiver) start(ctx context.Context, snap string) error {
	pr, pw, err := newPipe()
	if err != nil {
		return err
	}
	rctx, cancel := context.WithCancel(ctx)
	r.pw, r.cancel, r.done, r.wrote = pw, cancel, make(chan error, 1), make(chan error, 1)
	r.data = make(chan []byte, 8)
	r.sum, r.size = sha256.New(), 0
	go func() {
		err := r.d.Receive(rctx, r.vol, snap, pr)
		pr.Close()
		r.done <- err
	}()
	data, wrote := r.data, r.wrote
	go func() {
		for b := range data {
			if _, err := pw.Write(b); err != nil {
				for range data {
				}
				wrote <- err
				return
			}
		}
		wrote <- nil
	}()
	return nil
}

// stop ends the snapshot in progress: with cause nil it lets the driver
// finish and returns its verdict; otherwise it aborts the driver's receive.
func (r *Receiver) stop(cause error) error {
	if r.pw == nil {
		return cause
	}
	close(r.data)
	werr := <-r.wrote
	if cause == nil {
		cause = werr
	}
	if cause != nil {
		// A pipe's end reads as a clean end of stream: kill the driver's
		// receive first, so a cut stream is never taken as complete.
		r.cancel()
	}
	r.pw.Close()
	err := <-r.done
	r.cancel()
	r.pw = nil
	if cause != nil {
		if err != nil && !errors.Is(cause, ErrCorrupt) {
			return err
		}
		return cause
	}
	return err
}

// Finish checks every announced snapshot arrived and drops the transfer
// snapshots the header names. It returns the stream bytes received.
func (r *Receiver) Finish(ctx context.Context) (int64, error) {
	if r.next != len(r.snaps) {
		return r.total, fmt.Errorf("%w: %d of %d snapshots received", ErrCorrupt, r.next, len(r.snaps))
	}
	for _, snap := range r.drop {
		if err := r.d.DeleteSnapshot(ctx, r.vol, snap); err != nil && !errors.Is(err, storage.ErrNotFound) {
			return r.total, err
		}
	}
	return r.total, nil
}

// Abort stops a receive in progress and deletes what arrived: the whole
// volume, or for a refresh (header.resume) the snapshots this stream
// added, leaving the volume at the last complete one.
func (r *Receiver) Abort() {
	r.stop(errors.New("transfer aborted"))
	if !r.keep {
		_ = r.d.DeleteVolume(context.Background(), r.vol)
		return
	}
	for _, snap := range r.snaps[:r.next] {
		_ = r.d.DeleteSnapshot(context.Background(), r.vol, snap)
	}
}
