package ha

import (
	"context"
	"errors"
	"fmt"
	"time"

	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// ErrNoDisk is returned by a DiskRoom check for a member whose pool lacks
// the room for a copy of a container's volume.
var ErrNoDisk = errors.New("not enough disk for a replica")

// DiskHeadroom is the share of a volume's size a replica member keeps
// free beyond the copy itself (the volume grows between rounds).
const DiskHeadroom = 10 // percent

// DiskRoom makes a Replicator.Disk check: member needs, free on the
// container's pool, the bytes the volume uses here plus DiskHeadroom.
// free reports a member's free bytes per pool (false when it is unknown:
// such a member is not refused); used reports the bytes a container's
// volume uses on this member.
func DiskRoom(free func(member, pool string) (int64, bool), used func(ctx context.Context, ct *shoalv1.Container) int64) func(ct *shoalv1.Container, member string) error {
	return func(ct *shoalv1.Container, member string) error {
		have, ok := free(member, ct.GetPool())
		if !ok {
			return nil
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		u := used(ctx, ct)
		need := u + u*DiskHeadroom/100
		if have >= need {
			return nil
		}
		return fmt.Errorf("member %s has %s free on pool %s, a replica of %s (%s used) needs %s: %w",
			member, bytesText(have), ct.GetPool(), ct.GetName(), bytesText(u), bytesText(need), ErrNoDisk)
	}
}

// bytesText is a size for a message: 1.5GiB, 300MiB, 12KiB.
func bytesText(n int64) string {
	const k = 1024
	switch {
	case n >= k*k*k:
		return fmt.Sprintf("%.1fGiB", float64(n)/(k*k*k))
	case n >= k*k:
		return fmt.Sprintf("%.0fMiB", float64(n)/(k*k))
	default:
		return fmt.Sprintf("%.0fKiB", float64(n)/k)
	}
}
