package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/cluster/ha"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// What a daemon killed in the middle of a host operation leaves behind,
// and how the next daemon clears it:
//
//   - a container volume the cluster does not record (a delete cut after
//     its definition went, a copy or an incoming move cut before its
//     commit): removed with whatever else the host holds under the name;
//   - a container volume or definition of a container another member owns
//     (a move that committed while this daemon was down): kept as an HA
//     replica when the cluster records one here, removed otherwise;
//   - a work volume under tmp/ (a publish's copy of the rootfs): removed;
//   - a snapshot on the volume of a container this member owns that the
//     container's records do not list, other than HA's replication
//     snapshots (a snapshot created but never recorded, one whose record
//     went first, the transfer snapshot of a copy, move or publish):
//     deleted;
//   - an image in this host's store the cluster does not record (an image
//     added, by a publish, import or pull, whose record never came, or one
//     deleted while this member was down): removed with its pool volumes.
//
// Only what was on the host when the daemon started is a candidate, and
// not a name this daemon has since cleared for an operation of its own
// (RemoveStale): what it makes itself may be the work of an operation in
// flight. And
// nothing goes before the member has caught up with the cluster (Sync): a
// member that lags would take a new container for a leftover. LXC
// definitions of names the cluster has never heard of are left alone and
// reported (a container from before this member joined is someone's data).

// leftovers are the host objects found at start that an interrupted
// operation may have left.
type leftovers struct {
	// volumes are container names with a volume under containers/, by
	// pool.
	volumes map[string][]string
	// work are the tmp/ volumes, by pool.
	work map[string][]string
	// snapshots are each container volume's snapshots, by container name.
	snapshots map[string][]string
	// images are the fingerprints in the image store.
	images []string
}

// findLeftovers lists the candidates on this host now.
func (n *Node) findLeftovers(ctx context.Context) *leftovers {
	l := &leftovers{volumes: map[string][]string{}, work: map[string][]string{}, snapshots: map[string][]string{}}
	if imgs, err := n.images.List(); err == nil {
		for _, img := range imgs {
			l.images = append(l.images, img.Fingerprint)
		}
	} else {
		n.log.Warn("list images", "err", err)
	}
	n.poolsMu.RLock()
	defer n.poolsMu.RUnlock()
	for pool, d := range n.pools {
		vols, err := d.ListVolumes(ctx, "containers/")
		if err != nil {
			n.log.Warn("list volumes", "pool", pool, "err", err)
			continue
		}
		for _, v := range vols {
			name := strings.TrimPrefix(v, "containers/")
			l.volumes[pool] = append(l.volumes[pool], name)
			if snaps, err := d.ListSnapshots(ctx, v); err == nil {
				l.snapshots[name] = append(l.snapshots[name], snaps...)
			}
		}
		work, err := d.ListVolumes(ctx, "tmp/")
		if err != nil {
			n.log.Warn("list volumes", "pool", pool, "err", err)
			continue
		}
		l.work[pool] = work
	}
	return l
}

// leftoverSync bounds the wait for this member to catch up before a sweep.
const leftoverSync = 5 * time.Second

// runLeftovers sweeps what the start found, trying again each second
// until this member has caught up with the cluster once.
func (n *Node) runLeftovers(ctx context.Context, l *leftovers) {
	for try := 0; ; try++ {
		err := n.sweepLeftovers(ctx, l)
		if err == nil {
			return
		}
		if try == 0 {
			n.log.Info("leftovers of interrupted operations wait until this member catches up with the cluster", "err", err)
		}
		select {
		case <-n.stop:
			return
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// sweepLeftovers clears what the start found once this member has caught
// up with the cluster; it fails when it could not (no quorum answered).
func (n *Node) sweepLeftovers(ctx context.Context, l *leftovers) error {
	sctx, cancel := context.WithTimeout(ctx, leftoverSync)
	err := n.cl.Sync(sctx)
	cancel()
	if err != nil {
		return err
	}
	defined, err := n.rt.List(ctx)
	if err != nil {
		return fmt.Errorf("list local containers: %w", err)
	}
	for pool, names := range l.volumes {
		for _, name := range names {
			n.sweepVolume(ctx, pool, name, slices.Contains(defined, name))
		}
	}
	for name, snaps := range l.snapshots {
		n.sweepSnapshots(ctx, name, snaps)
	}
	for _, fp := range l.images {
		n.sweepImage(ctx, fp)
	}
	for pool, work := range l.work {
		d, err := n.pool(pool)
		if err != nil {
			continue
		}
		for _, v := range work {
			n.log.Warn("removing a work volume an interrupted operation left", "pool", pool, "volume", v)
			if err := d.DeleteVolume(ctx, v); err != nil {
				n.log.Warn("remove work volume", "pool", pool, "volume", v, "err", err)
			}
		}
	}
	return nil
}

// sweepVolume removes a container volume found at start when the cluster
// does not record the container here. A name with an LXC definition is
// resync's business (a stale copy) or an orphan it reports.
func (n *Node) sweepVolume(ctx context.Context, pool, name string, defined bool) {
	if defined || n.renaming(name) {
		return
	}
	if _, in := n.incoming.Load(name); in {
		return
	}
	ct, err := n.fsm.Container(name)
	switch {
	case errors.Is(err, cluster.ErrNotFound):
		if _, mine := n.claimed.Load(name); mine {
			return
		}
		unlock := n.locks.lock("ct/" + name)
		defer unlock()
		if _, err := n.fsm.Container(name); !errors.Is(err, cluster.ErrNotFound) {
			return // recorded meanwhile: a new container of that name
		}
		n.log.Warn("removing leftovers of an interrupted operation", "container", name, "pool", pool)
		if err := n.removeLocal(ctx, name); err != nil {
			n.log.Warn("remove leftovers", "container", name, "err", err)
		}
	case err == nil && ct.GetNode() != n.cfg.Name:
		if kept, err := n.keepAsReplica(ctx, name); err != nil || kept {
			if err != nil {
				n.log.Warn("keep a stale copy as a replica", "container", name, "err", err)
			}
			return
		}
		n.log.Warn("removing the copy an interrupted move left here", "container", name, "owner", ct.GetNode())
		if err := n.DropLocal(ctx, name); err != nil {
			n.log.Warn("remove stale copy", "container", name, "err", err)
		}
	}
}

// sweepSnapshots deletes the snapshots found at start on the volume of a
// container this member owns that its records do not list (HA's own
// replication snapshots stay).
func (n *Node) sweepSnapshots(ctx context.Context, name string, snaps []string) {
	unlock := n.locks.lock("ct/" + name)
	defer unlock()
	ct, err := n.fsm.Container(name)
	if err != nil || ct.GetNode() != n.cfg.Name {
		return
	}
	recorded := map[string]bool{}
	for _, sn := range ct.GetSnapshots() {
		recorded[sn.GetName()] = true
	}
	for _, s := range snaps {
		if recorded[s] || strings.HasPrefix(s, ha.SnapshotPrefix) {
			continue
		}
		n.log.Warn("deleting a snapshot an interrupted operation left", "container", name, "snapshot", s)
		if err := n.DeleteSnapshot(ctx, ct, s); err != nil {
			n.log.Warn("delete leftover snapshot", "container", name, "snapshot", s, "err", err)
		}
	}
}

// sweepImage removes an image found in the store at start that the
// cluster does not record.
func (n *Node) sweepImage(ctx context.Context, fp string) {
	recorded := func() bool {
		return slices.ContainsFunc(n.fsm.Images(), func(img *shoalv1.Image) bool { return img.GetFingerprint() == fp })
	}
	if recorded() {
		return
	}
	unlock := n.locks.lock("img/" + fp)
	recorded2 := recorded()
	unlock()
	if recorded2 {
		return
	}
	n.log.Warn("removing an image the cluster does not record", "image", fp[:min(12, len(fp))])
	if err := n.DeleteImage(ctx, fp); err != nil {
		n.log.Warn("remove unrecorded image", "image", fp, "err", err)
	}
}

// sweepStaleVolumes drops, on each resync, the volumes of containers
// another member owns that this member holds without an LXC definition
// (defined copies are resync's): what a cold move left on its target when
// its source died or its commit failed before the move was recorded. A
// move's target holds the volume it received only until the move commits,
// so a candidate goes only when two resyncs in a row (15 s apart) found
// it so and this member has caught up with the cluster.
func (n *Node) sweepStaleVolumes(ctx context.Context, defined []string) {
	candidates := map[string]bool{}
	n.poolsMu.RLock()
	for _, d := range n.pools {
		vols, err := d.ListVolumes(ctx, "containers/")
		if err != nil {
			continue
		}
		for _, v := range vols {
			name := strings.TrimPrefix(v, "containers/")
			if slices.Contains(defined, name) {
				continue
			}
			if ct, err := n.fsm.Container(name); err == nil && ct.GetNode() != n.cfg.Name {
				candidates[name] = true
			}
		}
	}
	n.poolsMu.RUnlock()
	seen := n.staleSeen
	n.staleSeen = map[string]bool{}
	var due []string
	for name := range candidates {
		_, in := n.incoming.Load(name)
		_, out := n.outgoing.Load(name)
		switch {
		case in || out:
		case seen[name]:
			due = append(due, name)
		default:
			n.staleSeen[name] = true
		}
	}
	if len(due) == 0 {
		return
	}
	sctx, cancel := context.WithTimeout(ctx, leftoverSync)
	err := n.cl.Sync(sctx)
	cancel()
	if err != nil {
		for _, name := range due {
			n.staleSeen[name] = true // again once this member has caught up
		}
		return
	}
	for _, name := range due {
		n.sweepVolume(ctx, "", name, false)
	}
}
