package node

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/shoal-dev/shoal/node/runtime"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
	"github.com/shoal-dev/shoal/storage"
)

// CreateSnapshot takes a read-only snapshot of a container's volume.
func (n *Node) CreateSnapshot(ctx context.Context, ct *shoalv1.Container, snap string) error {
	d, err := n.pool(ct.GetPool())
	if err != nil {
		return err
	}
	if err := d.CreateSnapshot(ctx, volumeName(ct.GetName()), snap); err != nil {
		return fmt.Errorf("snapshot %s/%s: %w", ct.GetName(), snap, err)
	}
	return nil
}

// DeleteSnapshot deletes a container's snapshot from the host; a snapshot
// already gone is not an error.
func (n *Node) DeleteSnapshot(ctx context.Context, ct *shoalv1.Container, snap string) error {
	d, err := n.pool(ct.GetPool())
	if err != nil {
		return err
	}
	if err := d.DeleteSnapshot(ctx, volumeName(ct.GetName()), snap); err != nil && !errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("delete snapshot %s/%s: %w", ct.GetName(), snap, err)
	}
	return nil
}

// RestoreSnapshot rolls a container's volume back to a snapshot. A running
// container is killed, restored and started again.
func (n *Node) RestoreSnapshot(ctx context.Context, ct *shoalv1.Container, snap string) error {
	unlock := n.locks.lock("ct/" + ct.GetName())
	defer unlock()
	d, err := n.pool(ct.GetPool())
	if err != nil {
		return err
	}
	st, err := n.rt.State(ctx, ct.GetName())
	running := err == nil && st.Status != runtime.StatusStopped
	if running {
		if err := n.rt.Stop(ctx, ct.GetName(), 0); err != nil && !errors.Is(err, runtime.ErrNotRunning) {
			return fmt.Errorf("stop %s: %w", ct.GetName(), err)
		}
	}
	if err := d.RestoreSnapshot(ctx, volumeName(ct.GetName()), snap); err != nil {
		return fmt.Errorf("restore %s/%s: %w", ct.GetName(), snap, err)
	}
	if running {
		cur, err := n.fsm.Container(ct.GetName())
		if err != nil {
			return err
		}
		if err := n.define(ctx, cur); err != nil {
			return err
		}
		if err := n.rt.Start(ctx, ct.GetName()); err != nil {
			return fmt.Errorf("start %s: %w", ct.GetName(), err)
		}
		n.applied.Store(ct.GetName(), configKey(cur.GetConfig()))
	}
	n.bus.Lifecycle(n.cfg.Name, "container-snapshot-restored", ct.GetName()+"/"+snap)
	return nil
}

// CopyVolume makes dst's volume a copy of src's: a copy-on-write clone when
// no snapshots are wanted; otherwise each named snapshot (oldest first) is
// sent incrementally into the copy, then the live content on top.
func (n *Node) CopyVolume(ctx context.Context, src *shoalv1.Container, dst string, snaps []string) error {
	d, err := n.pool(src.GetPool())
	if err != nil {
		return err
	}
	from, to := volumeName(src.GetName()), volumeName(dst)
	if len(snaps) == 0 {
		if err := d.CloneVolume(ctx, from, to); err != nil {
			return fmt.Errorf("copy %s to %s: %w", src.GetName(), dst, err)
		}
		return nil
	}
	tmp := "copy-" + dst
	if err := d.CreateSnapshot(ctx, from, tmp); err != nil {
		return fmt.Errorf("copy %s: %w", src.GetName(), err)
	}
	defer d.DeleteSnapshot(context.Background(), from, tmp)
	parent := ""
	for _, s := range append(append([]string{}, snaps...), tmp) {
		if err := transfer(ctx, d, from, s, parent, d, to); err != nil {
			_ = d.DeleteVolume(context.Background(), to)
			return fmt.Errorf("copy %s to %s: %w", src.GetName(), dst, err)
		}
		parent = s
	}
	return d.DeleteSnapshot(ctx, to, tmp)
}

// transfer streams snapshot snap of volume vol (incremental from parent when
// set) from one driver into volume dst of another (or the same).
func transfer(ctx context.Context, from storage.Driver, vol, snap, parent string, to storage.Driver, dst string) error {
	pr, pw := io.Pipe()
	errc := make(chan error, 1)
	go func() {
		err := from.Send(ctx, vol, snap, parent, pw)
		pw.CloseWithError(err)
		errc <- err
	}()
	rerr := to.Receive(ctx, dst, snap, pr)
	pr.CloseWithError(rerr)
	if serr := <-errc; serr != nil {
		return fmt.Errorf("send %s@%s: %w", vol, snap, serr)
	}
	if rerr != nil {
		return fmt.Errorf("receive %s@%s: %w", dst, snap, rerr)
	}
	return nil
}
