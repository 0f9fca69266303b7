package migration

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/shoal-dev/shoal/cluster/ha"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
	"github.com/shoal-dev/shoal/storage"
)

// sendVolume streams a volume's snapshots, as the header lists them, to a
// member's ReceiveVolume and returns the stream bytes sent and the
// receiver's answer.
func (e *engine) sendVolume(ctx context.Context, d storage.Driver, vol string, header *shoalv1.VolumeHeader, target string, p Progress) (int64, *shoalv1.ReceiveVolumeResponse, error) {
	phase := "sending volume to " + target
	p.Phase(phase)
	stream, err := e.peers.ReceiveVolume(ctx, target)
	if err != nil {
		return 0, nil, err
	}
	if err := stream.Send(&shoalv1.ReceiveVolumeRequest{Msg: &shoalv1.ReceiveVolumeRequest_Header{Header: header}}); err != nil {
		_, rerr := stream.CloseAndRecv()
		return 0, nil, errors.Join(err, rerr)
	}
	var progress int64
	sent, err := SendVolumeFrom(ctx, d, vol, header.GetBase(), header.GetSnapshots(), func(part *shoalv1.VolumePart) error {
		progress += int64(len(part.GetData()))
		p.Set(phase, progress, -1, "bytes")
		return stream.Send(&shoalv1.ReceiveVolumeRequest{Msg: &shoalv1.ReceiveVolumeRequest_Part{Part: part}})
	})
	if err != nil {
		_, rerr := stream.CloseAndRecv()
		return sent, nil, errors.Join(err, rerr)
	}
	resp, err := stream.CloseAndRecv()
	return sent, resp, err
}

// transferSnapshot names a snapshot a transfer takes for itself.
func transferSnapshot(prefix string) string {
	return prefix + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)
}

// carried lists the snapshots a move takes along: the container's own
// (oldest first), then the newest HA replication snapshot on the volume,
// if any — the one its replicas are based on, so the new owner goes on
// replicating with increments instead of starting over.
func carried(ctx context.Context, d storage.Driver, vol string, ct *shoalv1.Container) []string {
	out := snapshotNames(ct)
	all, err := d.ListSnapshots(ctx, vol)
	if err != nil {
		return out
	}
	for i := len(all) - 1; i >= 0; i-- {
		if strings.HasPrefix(all[i], ha.SnapshotPrefix) {
			return append(out, all[i])
		}
	}
	return out
}

// snapshotNames lists a container's snapshots, oldest first.
func snapshotNames(ct *shoalv1.Container) []string {
	var out []string
	for _, sn := range ct.GetSnapshots() {
		out = append(out, sn.GetName())
	}
	return out
}

// takeSnapshot snapshots vol for the transfer and has the machine delete
// the snapshot at the end, whatever happens.
func (m *machine) takeSnapshot(ctx context.Context, d storage.Driver, vol, snap string) error {
	if err := d.CreateSnapshot(ctx, vol, snap); err != nil {
		return err
	}
	m.always(func() { _ = d.DeleteSnapshot(context.WithoutCancel(ctx), vol, snap) })
	return nil
}

// WaitState waits until the cluster shows a container in the desired
// state (Running or Stopped, as its owner reports), showing the owner's
// progress meanwhile (an image pull: "Pulling") as the phase.
func WaitState(ctx context.Context, cl Cluster, name string, desired shoalv1.DesiredState, p Progress) error {
	p = orNop(p)
	want := "Running"
	if desired == shoalv1.DesiredState_DESIRED_STATE_STOPPED {
		want = "Stopped"
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		ct, err := cl.Container(name)
		if err != nil {
			return err
		}
		switch ct.GetStatus() {
		case want:
			return nil
		case "Pulling":
			p.Phase(ct.GetNode() + ": " + ct.GetStatusMessage())
		case "Error":
			return fmt.Errorf("on %s: %s", ct.GetNode(), ct.GetStatusMessage())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}
