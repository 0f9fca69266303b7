package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/node/runtime"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
	"github.com/shoal-dev/shoal/storage"
)

// A rename on the owner, in order, under the locks of both names:
//
//  1. a journal file STATE/renames/NEW holding OLD;
//  2. commit: the cluster's ContainerRenameCommand (the point of no
//     return; refused, the journal goes and nothing else changed);
//  3. the host follows: the definition of OLD goes, the volume (with its
//     snapshots) is renamed, the stateful snapshots' process state moves;
//     the reconciler defines NEW (hostname included) when the locks go;
//  4. the journal goes.
//
// A daemon that dies between 2 and 4 finds the journal when it reconciles
// NEW (ensureVolume: the volume is missing) and finishes the host's part
// instead of making a fresh volume from the image; meanwhile nothing
// removes OLD's volume (removeLocal skips a name a journal renames).

// renamesDir holds the journals of renames whose host part is not done.
func (n *Node) renamesDir() string { return filepath.Join(n.cfg.StateDir, "renames") }

// RenameContainer renames a stopped container this member owns. commit
// records the rename in the cluster; the host's part follows it. An error
// after commit says the host's part failed: the reconciler retries it.
func (n *Node) RenameContainer(ctx context.Context, ct *shoalv1.Container, newName string, commit func(context.Context) error) error {
	old := ct.GetName()
	if !runtime.ValidName(newName) {
		return fmt.Errorf("rename %s: new name %q: %w", old, newName, runtime.ErrInvalid)
	}
	first, second := "ct/"+old, "ct/"+newName
	if second < first {
		first, second = second, first
	}
	defer n.locks.lock(first)()
	defer n.locks.lock(second)()
	if st, err := n.rt.State(ctx, old); err == nil && st.Status != runtime.StatusStopped {
		return fmt.Errorf("renaming of running instance not allowed: %s is %s: %w", old, strings.ToLower(fmt.Sprint(st.Status)), ErrConflict)
	}
	if _, err := n.fsm.Container(newName); err == nil {
		return fmt.Errorf("container %q: %w", newName, cluster.ErrExists)
	}
	// Leftovers of an interrupted operation under the new name go first.
	if _, err := n.rt.State(ctx, newName); err == nil || n.HasVolume(ctx, newName) {
		n.log.Warn("removing leftovers of an interrupted operation", "container", newName)
		if err := n.removeLocal(ctx, newName); err != nil {
			return fmt.Errorf("rename %s to %s: %w", old, newName, err)
		}
	}
	if err := os.MkdirAll(n.renamesDir(), 0o700); err != nil {
		return fmt.Errorf("rename %s to %s: %w", old, newName, err)
	}
	journal := filepath.Join(n.renamesDir(), newName)
	if err := os.WriteFile(journal, []byte(old), 0o600); err != nil {
		return fmt.Errorf("rename %s to %s: journal: %w", old, newName, err)
	}
	if err := commit(ctx); err != nil {
		os.Remove(journal)
		return err
	}
	if err := n.finishRename(context.WithoutCancel(ctx), ct.GetPool(), old, newName); err != nil {
		return fmt.Errorf("%s is %s in the cluster, but its host part failed (the reconciler retries it): %w", old, newName, err)
	}
	n.bus.Lifecycle(n.cfg.Name, "container-renamed", old+"/"+newName)
	return nil
}

// finishRename does the host's part of a committed rename and drops its
// journal; each step is skipped when already done, so it can run again.
func (n *Node) finishRename(ctx context.Context, pool, old, newName string) error {
	n.stopProxies(old)
	if err := n.rt.Undefine(ctx, old); err != nil && !errors.Is(err, runtime.ErrNotFound) {
		return fmt.Errorf("undefine %s: %w", old, err)
	}
	n.applied.Delete(old)
	n.appliedNICs.Delete(old)
	n.appliedDevices.Delete(old)
	d, err := n.pool(pool)
	if err != nil {
		return err
	}
	if ok, err := d.VolumeExists(ctx, volumeName(old)); err != nil {
		return err
	} else if ok {
		if err := d.RenameVolume(ctx, volumeName(old), volumeName(newName)); err != nil {
			return fmt.Errorf("rename volume of %s: %w", old, err)
		}
	}
	stateDir := filepath.Join(n.cfg.StateDir, "snapshot-state")
	if err := os.Rename(filepath.Join(stateDir, old), filepath.Join(stateDir, newName)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("move snapshot state of %s: %w", old, err)
	}
	if err := os.Remove(filepath.Join(n.renamesDir(), newName)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("rename %s: drop journal: %w", old, err)
	}
	n.log.Info("renamed", "container", newName, "from", old)
	return nil
}

// resumeRename finishes the host's part of a rename to ct's name that a
// journal says was started (the caller holds ct's lock and found no
// volume). It reports whether the volume is there now.
func (n *Node) resumeRename(ctx context.Context, ct *shoalv1.Container) (bool, error) {
	journal := filepath.Join(n.renamesDir(), ct.GetName())
	b, err := os.ReadFile(journal)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	old := strings.TrimSpace(string(b))
	if _, err := n.fsm.Container(old); err == nil || !runtime.ValidName(old) {
		// The cluster still has (or has again) the old name: not ours.
		os.Remove(journal)
		return false, nil
	}
	defer n.locks.lock("ct/" + old)()
	n.log.Warn("finishing an interrupted rename", "container", ct.GetName(), "from", old)
	if err := n.finishRename(ctx, ct.GetPool(), old, ct.GetName()); err != nil {
		return false, err
	}
	d, err := n.pool(ct.GetPool())
	if err != nil {
		return false, err
	}
	ok, err := d.VolumeExists(ctx, volumeName(ct.GetName()))
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return false, err
	}
	return ok, nil
}

// renaming reports whether a rename journal names name as the old name:
// its host objects are about to become another container's.
func (n *Node) renaming(name string) bool {
	entries, err := os.ReadDir(n.renamesDir())
	if err != nil {
		return false
	}
	for _, e := range entries {
		if b, err := os.ReadFile(filepath.Join(n.renamesDir(), e.Name())); err == nil && strings.TrimSpace(string(b)) == name {
			return true
		}
	}
	return false
}

// RenameSnapshot renames a container's snapshot on this host, with its
// process state when it is stateful.
func (n *Node) RenameSnapshot(ctx context.Context, ct *shoalv1.Container, snap, newName string) error {
	defer n.locks.lock("ct/" + ct.GetName())()
	d, err := n.pool(ct.GetPool())
	if err != nil {
		return err
	}
	if err := storage.RenameSnapshot(ctx, d, volumeName(ct.GetName()), snap, newName); err != nil {
		return fmt.Errorf("rename snapshot %s/%s: %w", ct.GetName(), snap, err)
	}
	if err := os.Rename(n.snapshotStateDir(ct.GetName(), snap), n.snapshotStateDir(ct.GetName(), newName)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("rename snapshot state %s/%s: %w", ct.GetName(), snap, err)
	}
	return nil
}
