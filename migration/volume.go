package migration

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"

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
	var total int64
	parent := ""
	for _, snap := range snaps {
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(d.Send(ctx, vol, snap, parent, pw)) }()
		h := sha256.New()
		buf := make([]byte, chunk)
		var size int64
		for {
			n, err := io.ReadFull(pr, buf)
			if n > 0 {
				h.Write(buf[:n])
				size += int64(n)
				if serr := send(&shoalv1.VolumePart{Snapshot: snap, Data: append([]byte(nil), buf[:n]...)}); serr != nil {
					pr.CloseWithError(serr)
					return total, fmt.Errorf("send %s@%s: %w", vol, snap, serr)
				}
			}
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				break
			}
			if err != nil {
				return total, fmt.Errorf("send %s@%s: %w", vol, snap, err)
			}
		}
		if err := send(&shoalv1.VolumePart{Snapshot: snap, End: true, Size: size, Sha256: hex.EncodeToString(h.Sum(nil))}); err != nil {
			return total, fmt.Errorf("send %s@%s: %w", vol, snap, err)
		}
		total += size
		parent = snap
	}
	return total, nil
}

// Receiver applies a volume stream to a driver.
type Receiver struct {
	d     storage.Driver
	vol   string
	snaps []string
	drop  bool
	next  int

	pw    *io.PipeWriter
	done  chan error
	h     hashWriter
	total int64
}

type hashWriter struct {
	sum  interface{ Sum([]byte) []byte }
	w    io.Writer
	size int64
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
	return &Receiver{d: d, vol: vol, snaps: h.GetSnapshots(), drop: h.GetDropLast()}, nil
}

// Apply consumes one part.
func (r *Receiver) Apply(ctx context.Context, p *shoalv1.VolumePart) error {
	if r.next >= len(r.snaps) || p.GetSnapshot() != r.snaps[r.next] {
		return fmt.Errorf("%w: part of snapshot %q out of order", ErrCorrupt, p.GetSnapshot())
	}
	if r.pw == nil {
		pr, pw := io.Pipe()
		r.pw, r.done = pw, make(chan error, 1)
		sum := sha256.New()
		r.h = hashWriter{sum: sum, w: io.MultiWriter(pw, sum)}
		snap := p.GetSnapshot()
		go func() {
			err := r.d.Receive(ctx, r.vol, snap, pr)
			pr.CloseWithError(err)
			r.done <- err
		}()
	}
	if len(p.GetData()) > 0 {
		if _, err := r.h.w.Write(p.GetData()); err != nil {
			// The receiving side failed: collect its error.
			r.pw.CloseWithError(err)
			if rerr := <-r.done; rerr != nil {
				err = rerr
			}
			r.pw = nil
			return fmt.Errorf("receive %s@%s: %w", r.vol, p.GetSnapshot(), err)
		}
		r.h.size += int64(len(p.GetData()))
	}
	if !p.GetEnd() {
		return nil
	}
	got := hex.EncodeToString(r.h.sum.Sum(nil))
	if r.h.size != p.GetSize() || got != p.GetSha256() {
		r.pw.CloseWithError(ErrCorrupt)
		<-r.done
		r.pw = nil
		return fmt.Errorf("%w: snapshot %s: %d bytes sha256 %.12s, sender sent %d bytes sha256 %.12s",
			ErrCorrupt, p.GetSnapshot(), r.h.size, got, p.GetSize(), p.GetSha256())
	}
	r.pw.Close()
	err := <-r.done
	r.pw = nil
	if err != nil {
		return fmt.Errorf("receive %s@%s: %w", r.vol, p.GetSnapshot(), err)
	}
	r.total += r.h.size
	r.next++
	return nil
}

// Finish checks every announced snapshot arrived and drops the transfer
// snapshot when asked. It returns the stream bytes received.
func (r *Receiver) Finish(ctx context.Context) (int64, error) {
	if r.next != len(r.snaps) {
		return r.total, fmt.Errorf("%w: %d of %d snapshots received", ErrCorrupt, r.next, len(r.snaps))
	}
	if r.drop {
		if err := r.d.DeleteSnapshot(ctx, r.vol, r.snaps[len(r.snaps)-1]); err != nil {
			return r.total, err
		}
	}
	return r.total, nil
}

// Abort stops a receive in progress and deletes what arrived.
func (r *Receiver) Abort() {
	if r.pw != nil {
		r.pw.CloseWithError(errors.New("transfer aborted"))
		<-r.done
	}
	_ = r.d.DeleteVolume(context.Background(), r.vol)
}
