package zfs

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/shoal-dev/shoal/storage"
)

// Send writes `zfs send` of the snapshot to w: `zfs send -i` from parent
// when parent != "" (only the blocks changed since).
func (d *Driver) Send(ctx context.Context, vol, snap, parent string, w io.Writer) error {
	if err := validSnap(vol, snap); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	if parent != "" {
		if err := storage.ValidateSnapshotName(parent); err != nil {
			return fmt.Errorf("send: parent: %w", err)
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	ds, sn := d.dataset(vol), d.snapName(vol, snap)
	args := []string{"send"}
	reasons := []reason{missing(ds, "volume "+vol), missing(sn, "snapshot "+vol+"/"+snap)}
	if parent != "" {
		pn := d.snapName(vol, parent)
		args = append(args, "-i", pn)
		reasons = append(reasons, missing(pn, "parent snapshot "+vol+"/"+parent))
	}
	if err := zfsStream(ctx, nil, w, append(args, sn)...); err != nil {
		return fmt.Errorf("send %s/%s: %w", vol, snap, d.why(ctx, err, reasons...))
	}
	return nil
}

// The head of a send stream: a dmu_replay_record of type DRR_BEGIN, whose
// drr_begin part starts with the magic number, the version info (the
// stream kind in its low two bits) and, at byte 48, the guid of the
// snapshot an incremental stream starts from (0 for a full one). The
// sender's byte order is the magic's.
const (
	streamMagic       = 0x2F5bacbac
	streamHeadLen     = 56
	substream         = 1 // DMU_SUBSTREAM: one dataset's stream
	streamHdrTypeMask = 3
)

// streamHead is what Receive reads from a stream's first record.
type streamHead struct {
	toGUID, fromGUID uint64
}

// parseStreamHead decodes the BEGIN record at the start of a stream.
func parseStreamHead(b []byte) (streamHead, error) {
	if len(b) < streamHeadLen {
		return streamHead{}, fmt.Errorf("zfs stream: %d bytes, too short for a BEGIN record", len(b))
	}
	var order binary.ByteOrder
	switch {
	case binary.LittleEndian.Uint64(b[8:]) == streamMagic:
		order = binary.LittleEndian
	case binary.BigEndian.Uint64(b[8:]) == streamMagic:
		order = binary.BigEndian
	default:
		return streamHead{}, errors.New("zfs stream: no send stream magic (not a zfs send stream)")
	}
	if t := order.Uint32(b[0:]); t != 0 {
		return streamHead{}, fmt.Errorf("zfs stream: first record has type %d, want BEGIN", t)
	}
	if kind := order.Uint64(b[16:]) & streamHdrTypeMask; kind != substream {
		return streamHead{}, fmt.Errorf("zfs stream: kind %d is not a single dataset's stream (a zfs send -R stream?)", kind)
	}
	return streamHead{toGUID: order.Uint64(b[40:]), fromGUID: order.Uint64(b[48:])}, nil
}

// Receive reads a `zfs send` stream. A full stream for a new volume is
// received in place; one for an existing volume is received aside and
// swapped in (the old filesystem and its snapshots go, as DeleteVolume
// would). An incremental stream applies to the local snapshot with the
// stream's origin guid (whatever its name now) with `zfs receive -F`,
// which drops what was written since; local snapshots taken after that
// origin are destroyed first (the sender's history wins).
func (d *Driver) Receive(ctx context.Context, vol, snap string, r io.Reader) error {
	if err := validSnap(vol, snap); err != nil {
		return fmt.Errorf("receive: %w", err)
	}
	br := bufio.NewReaderSize(r, 64<<10)
	b, err := br.Peek(streamHeadLen)
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("receive %s/%s: %w", vol, snap, err)
	}
	head, err := parseStreamHead(b)
	if err != nil {
		return fmt.Errorf("receive %s/%s: %w", vol, snap, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	ix, err := d.scan(ctx)
	if err != nil {
		return fmt.Errorf("receive %s/%s: %w", vol, snap, err)
	}
	ds, sn := d.dataset(vol), d.snapName(vol, snap)
	if ix.has(sn) {
		return fmt.Errorf("receive %s/%s: snapshot: %w", vol, snap, storage.ErrExists)
	}
	switch {
	case head.fromGUID != 0:
		err = d.receiveIncremental(ctx, ix, vol, sn, head, br)
	case ix.has(ds):
		err = d.receiveReplace(ctx, vol, snap, br)
	default:
		args := append([]string{"receive"}, nameProp(propVolume, vol)...)
		if err = zfsStream(ctx, br, nil, append(args, sn)...); err == nil {
			err = d.ensureMounted(ctx, vol)
		}
	}
	if err == nil {
		err = setNameProp(ctx, propSnapshot, snap, sn)
	}
	// The new snapshot is mounted, and what a failure unmounted put back.
	if merr := d.remountSnapshots(context.WithoutCancel(ctx)); err == nil {
		err = merr
	}
	if err != nil {
		return fmt.Errorf("receive %s/%s: %w", vol, snap, err)
	}
	return nil
}

func (d *Driver) receiveIncremental(ctx context.Context, ix *index, vol, sn string, head streamHead, r io.Reader) error {
	ds := d.dataset(vol)
	if !ix.has(ds) {
		return fmt.Errorf("an incremental stream needs the volume: %w", storage.ErrNotFound)
	}
	from := ix.snapshotByGUID(ds, head.fromGUID)
	if from == nil {
		return fmt.Errorf("the stream's origin snapshot (guid %d) is not here: %w", head.fromGUID, storage.ErrNotFound)
	}
	if later := ix.after(ds, from.name); len(later) > 0 {
		if err := d.unmountShown(ctx, vol, later); err != nil {
			return err
		}
		if _, err := zfs(ctx, "rollback", "-r", from.name); err != nil {
			return err
		}
	}
	return zfsStream(ctx, r, nil, "receive", "-F", sn)
}

// receiveReplace receives a full stream for an existing volume into the
// internal dataset, then swaps it in for the volume's filesystem, which
// is moved aside and collected (kept while clones depend on it).
func (d *Driver) receiveReplace(ctx context.Context, vol, snap string, r io.Reader) error {
	ds := d.dataset(vol)
	sc, _ := component(snap)
	stage := d.internal() + "/" + recvPrefix + randomSuffix()
	args := append([]string{"receive"}, nameProp(propVolume, vol)...)
	if err := zfsStream(ctx, r, nil, append(args, stage+"@"+sc)...); err != nil {
		return err
	}
	keep := context.WithoutCancel(ctx)
	old := d.internal() + "/" + deletedPrefix + randomSuffix()
	// The old snapshots' mounts go with the old filesystem.
	if err := unmountAll(ctx, d.snapDir(vol)); err != nil {
		_, derr := zfs(keep, "destroy", "-r", stage)
		return errors.Join(err, derr)
	}
	if _, err := zfs(ctx, "rename", ds, old); err != nil {
		_, derr := zfs(keep, "destroy", "-r", stage)
		return errors.Join(err, derr)
	}
	if _, err := zfs(ctx, "rename", stage, ds); err != nil {
		_, berr := zfs(keep, "rename", old, ds)
		_, derr := zfs(keep, "destroy", "-r", stage)
		return errors.Join(err, berr, derr)
	}
	// Received under the internal dataset (mountpoint none), the new
	// filesystem was not mounted; at its place it inherits Path(vol).
	if err := d.ensureMounted(ctx, vol); err != nil {
		return err
	}
	return d.collect(ctx)
}

// ensureMounted mounts the volume's filesystem at Path(vol) when it is
// not mounted (zfs receive and rename mount only what was mounted).
func (d *Driver) ensureMounted(ctx context.Context, vol string) error {
	if ok, err := isMountpoint(d.Path(vol)); err != nil || ok {
		return err
	}
	_, err := zfs(ctx, "mount", d.dataset(vol))
	return err
}
