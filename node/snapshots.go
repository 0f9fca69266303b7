package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/internal/config"
	"github.com/shoal-dev/shoal/internal/failpoint"
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
	return failpoint.Hit("snapshot-after-volume")
}

// snapshotStateDir is where a stateful snapshot's CRIU checkpoint lives.
func (n *Node) snapshotStateDir(container, snap string) string {
	return filepath.Join(n.cfg.StateDir, "snapshot-state", container, snap)
}

// HasSnapshotState reports whether this host keeps the process state of a
// stateful snapshot (it stays on the host that took it).
func (n *Node) HasSnapshotState(container, snap string) bool {
	_, err := os.Stat(filepath.Join(n.snapshotStateDir(container, snap), "inventory.img"))
	return err == nil
}

// CreateStatefulSnapshot snapshots a running container with its
// processes: it is frozen, checkpointed with CRIU and its volume
// snapshotted at the same instant, then thawed.
func (n *Node) CreateStatefulSnapshot(ctx context.Context, ct *shoalv1.Container, snap string) error {
	name := ct.GetName()
	unlock := n.locks.lock("ct/" + name)
	defer unlock()
	if err := n.CanCheckpoint(ctx); err != nil {
		return err
	}
	st, err := n.rt.State(ctx, name)
	if err != nil || st.Status != runtime.StatusRunning {
		return fmt.Errorf("stateful snapshot of %s: %w", name, runtime.ErrNotRunning)
	}
	d, err := n.pool(ct.GetPool())
	if err != nil {
		return err
	}
	dir := n.snapshotStateDir(name, snap)
	if err := os.MkdirAll(filepath.Dir(dir), 0o711); err != nil {
		return fmt.Errorf("stateful snapshot of %s: %w", name, err)
	}
	_ = os.RemoveAll(dir) // left by an earlier, failed attempt
	if err := n.rt.Freeze(ctx, name); err != nil {
		return fmt.Errorf("stateful snapshot of %s: %w", name, err)
	}
	defer func() {
		if err := n.rt.Unfreeze(context.WithoutCancel(ctx), name); err != nil {
			n.log.Error("thaw after a stateful snapshot", "container", name, "err", err)
		}
	}()
	if err := n.rt.Checkpoint(ctx, name, dir, runtime.CheckpointOptions{}); err != nil {
		os.RemoveAll(dir)
		return fmt.Errorf("stateful snapshot of %s: %w", name, err)
	}
	if err := d.CreateSnapshot(ctx, volumeName(name), snap); err != nil {
		os.RemoveAll(dir)
		return fmt.Errorf("snapshot %s/%s: %w", name, snap, err)
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
	if err := os.RemoveAll(n.snapshotStateDir(ct.GetName(), snap)); err != nil {
		return fmt.Errorf("delete snapshot state %s/%s: %w", ct.GetName(), snap, err)
	}
	if err := d.DeleteSnapshot(ctx, volumeName(ct.GetName()), snap); err != nil && !errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("delete snapshot %s/%s: %w", ct.GetName(), snap, err)
	}
	return failpoint.Hit("snapshot-delete-after-volume")
}

// A restore on the owner, in order, under the container's lock:
//
//  1. a journal file STATE/restores/NAME holding the snapshot's name;
//  2. commit: the cluster takes the snapshot's config (and, for a
//     stateful restore, a running desired state); refused, the journal
//     goes and nothing else changed;
//  3. the host follows: the container stops, its volume becomes the
//     snapshot (one rename: never partial), the journal goes, and the
//     container starts again or resumes the snapshot's processes.
//
// A daemon that dies between 1 and 3 finds the journal when it next
// reconciles the container (finishRestore), once it has caught up with
// the cluster: when the container's config is the snapshot's, the commit
// happened and the files follow; otherwise it did not, and the journal
// goes. Either way the restore completed or left no trace. (A stateful
// restore finished that way boots from the snapshot's files: the process
// state is not resumed.)

// restoresDir holds the journals of restores whose host part is not done.
func (n *Node) restoresDir() string { return filepath.Join(n.cfg.StateDir, "restores") }

// RestoreSnapshot rolls a container back to a snapshot: commit records the
// snapshot's config in the cluster, and the volume follows. A running
// container is killed, restored and started again. With stateful (the
// snapshot's process state is on this host) the container resumes the
// processes the snapshot froze instead of booting.
func (n *Node) RestoreSnapshot(ctx context.Context, ct *shoalv1.Container, snap string, stateful bool, commit func(context.Context) error) error {
	unlock := n.locks.lock("ct/" + ct.GetName())
	defer unlock()
	d, err := n.pool(ct.GetPool())
	if err != nil {
		return err
	}
	if err := os.MkdirAll(n.restoresDir(), 0o700); err != nil {
		return fmt.Errorf("restore %s/%s: %w", ct.GetName(), snap, err)
	}
	journal := filepath.Join(n.restoresDir(), ct.GetName())
	if err := os.WriteFile(journal, []byte(snap), 0o600); err != nil {
		return fmt.Errorf("restore %s/%s: journal: %w", ct.GetName(), snap, err)
	}
	if err := commit(ctx); err != nil {
		os.Remove(journal)
		return err
	}
	if err := failpoint.Hit("restore-after-commit"); err != nil {
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
		return fmt.Errorf("%s has the config of snapshot %s in the cluster, but its files could not follow (the reconciler retries): %w", ct.GetName(), snap, err)
	}
	if err := os.Remove(journal); err != nil {
		return fmt.Errorf("restore %s/%s: journal: %w", ct.GetName(), snap, err)
	}
	if stateful {
		return n.resumeSnapshot(ctx, ct.GetName(), snap)
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
		n.applied.Store(ct.GetName(), configKey(cluster.ExpandedConfig(cur)))
	}
	n.bus.Lifecycle(n.cfg.Name, "container-snapshot-restored", ct.GetName()+"/"+snap)
	return nil
}

// resumeSnapshot restores a stateful snapshot's processes (the volume is
// already rolled back) from a scratch copy of its checkpoint, which each
// restore annotates.
func (n *Node) resumeSnapshot(ctx context.Context, name, snap string) error {
	cur, err := n.fsm.Container(name)
	if err != nil {
		return err
	}
	if err := n.define(ctx, cur); err != nil {
		return err
	}
	tmp, err := n.NewCheckpointDir(name)
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if out, err := exec.CommandContext(ctx, "cp", "-a", n.snapshotStateDir(name, snap), tmp).CombinedOutput(); err != nil {
		return fmt.Errorf("restore %s/%s: copy the process state: %v: %s", name, snap, err, out)
	}
	if !config.Bool(cluster.ExpandedConfig(cur), "security.privileged") && !n.idmap.IsZero() {
		if err := runtime.ChownCheckpoint(tmp, int(n.idmap.HostUID), int(n.idmap.HostGID)); err != nil {
			return fmt.Errorf("restore %s/%s: %w", name, snap, err)
		}
	}
	if err := n.rt.Restore(ctx, name, tmp, runtime.RestoreOptions{}); err != nil {
		return fmt.Errorf("restore %s/%s: %w", name, snap, err)
	}
	n.applied.Delete(name)
	if err := n.applyLimits(ctx, cur); err != nil {
		n.log.Warn("re-apply limits after a stateful restore", "container", name, "err", err)
	}
	n.bus.Lifecycle(n.cfg.Name, "container-snapshot-restored", name+"/"+snap)
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
	if err := copyVolume(ctx, d, volumeName(src.GetName()), volumeName(dst), snaps); err != nil {
		return fmt.Errorf("copy %s to %s: %w", src.GetName(), dst, err)
	}
	return failpoint.Hit("copy-after-volume")
}

// copyVolume makes volume to a copy of volume from in one pool (see
// CopyVolume); a failure leaves no partial copy.
func copyVolume(ctx context.Context, d storage.Driver, from, to string, snaps []string) error {
	if len(snaps) == 0 {
		return d.CloneVolume(ctx, from, to)
	}
	tmp := "copy-" + strings.ReplaceAll(to, "/", "-")
	if err := d.CreateSnapshot(ctx, from, tmp); err != nil {
		return err
	}
	defer d.DeleteSnapshot(context.Background(), from, tmp)
	parent := ""
	for _, s := range append(append([]string{}, snaps...), tmp) {
		if err := transfer(ctx, d, from, s, parent, d, to); err != nil {
			_ = d.DeleteVolume(context.Background(), to)
			return err
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
	serr := <-errc
	// A receiver that fails (a full pool) breaks the sender's pipe: its
	// error is the cause.
	if rerr != nil {
		return fmt.Errorf("receive %s@%s: %w", dst, snap, rerr)
	}
	if serr != nil {
		return fmt.Errorf("send %s@%s: %w", vol, snap, serr)
	}
	return nil
}

// finishRestore completes or drops a restore a dead daemon left between
// its commit and its files (see RestoreSnapshot). It returns the
// container's record as the cluster has it now.
func (n *Node) finishRestore(ctx context.Context, ct *shoalv1.Container) (*shoalv1.Container, error) {
	journal := filepath.Join(n.restoresDir(), ct.GetName())
	b, err := os.ReadFile(journal)
	if errors.Is(err, os.ErrNotExist) {
		return ct, nil
	}
	if err != nil {
		return nil, fmt.Errorf("restore journal of %s: %w", ct.GetName(), err)
	}
	snap := string(b)
	sctx, cancel := context.WithTimeout(ctx, leftoverSync)
	err = n.cl.Sync(sctx)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("an interrupted restore of %s/%s waits until this member catches up with the cluster: %w", ct.GetName(), snap, err)
	}
	cur, err := n.fsm.Container(ct.GetName())
	if err != nil {
		return nil, err
	}
	i := slices.IndexFunc(cur.GetSnapshots(), func(s *shoalv1.Snapshot) bool { return s.GetName() == snap })
	if i < 0 || !maps.Equal(cur.GetSnapshots()[i].GetConfig(), cur.GetConfig()) {
		n.log.Warn("dropping a restore that never committed", "container", cur.GetName(), "snapshot", snap)
		return cur, os.Remove(journal)
	}
	n.log.Warn("finishing a restore whose files did not follow its commit", "container", cur.GetName(), "snapshot", snap)
	d, err := n.pool(cur.GetPool())
	if err != nil {
		return nil, err
	}
	if st, err := n.rt.State(ctx, cur.GetName()); err == nil && st.Status != runtime.StatusStopped {
		if err := n.rt.Stop(ctx, cur.GetName(), 0); err != nil && !errors.Is(err, runtime.ErrNotRunning) {
			return nil, fmt.Errorf("stop %s: %w", cur.GetName(), err)
		}
	}
	if err := d.RestoreSnapshot(ctx, volumeName(cur.GetName()), snap); err != nil {
		return nil, fmt.Errorf("restore %s/%s: %w", cur.GetName(), snap, err)
	}
	n.applied.Delete(cur.GetName())
	return cur, os.Remove(journal)
}
