package lvm

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/shoal-dev/shoal/storage"
)

// Defaults for Config fields left zero.
const (
	DefaultThinPool   = "shoalpool"
	DefaultVolumeSize = 10 << 30
)

// Config configures an LVM driver.
type Config struct {
	// Path is the pool directory where volumes and snapshots are mounted.
	// The driver owns everything beneath it.
	Path string
	// VolumeGroup is the VG's name. When it does not exist, New creates
	// it on Device, or else on LoopFile.
	VolumeGroup string
	// Device is a block device for a new VG (its content is lost).
	Device string
	// LoopFile is a file for a new VG, created sparse with LoopSize bytes
	// when missing, and attached to a loop device by New (again after a
	// reboot) when Device is "".
	LoopFile string
	// LoopSize is the size of a new LoopFile.
	LoopSize int64
	// ThinPool is the thin pool's LV name (DefaultThinPool when ""). The
	// driver owns the thin pool and the thin LVs in it; several drivers
	// may share one VG with pools of their own.
	ThinPool string
	// PoolSize is the size of a new thin pool (0: 90% of the VG's free
	// space).
	PoolSize int64
	// VolumeSize is the virtual size of each volume's thin LV
	// (DefaultVolumeSize when 0); blocks are allocated on write.
	VolumeSize int64
	// ProjectQuotas turns on SetQuota: a limit is an ext4 project quota
	// on the volume's filesystem. The kernel lets holders of
	// CAP_SYS_RESOURCE in the host's namespace (host root, privileged
	// containers) past project limits, so they bind unprivileged
	// containers only; without this option Info().Quotas is false.
	ProjectQuotas bool
}

// Driver is the LVM thin-pool storage.Driver. It is safe for concurrent
// use: calls are serialized.
type Driver struct {
	mu       sync.Mutex
	root     string
	vg       string
	pool     string
	size     int64
	poolSize int64
	device   string // the PV named in Config (Device, or LoopFile's loop device)
	loopFile string
	lastSeq  int64
	ix       *index // kept between calls; nil: read it again
	quotas   bool
}

var (
	_ storage.Driver          = (*Driver)(nil)
	_ storage.SnapshotRenamer = (*Driver)(nil)
)

// Tags on the driver's LVs (LVM tags allow [A-Za-z0-9_+.-]; names are
// hex-encoded into them).
const (
	tagVol     = "shoal.vol."    // + hex(volume): the volume's LV
	tagSnapOf  = "shoal.snapof." // + hex(volume): a snapshot of that volume
	tagSnap    = "shoal.snap."   // + hex(snapshot name)
	tagSeq     = "shoal.seq."    // + 20 digits: creation order of snapshots
	tagStaging = "shoal.staging" // a receive or restore in progress
)

// New opens the pool: it attaches the loop file, creates the VG and the
// thin pool when missing, activates them, removes what an interrupted
// receive or restore left, and mounts every volume and snapshot.
func New(ctx context.Context, cfg Config) (_ *Driver, retErr error) {
	if cfg.Path == "" || cfg.VolumeGroup == "" {
		return nil, errors.New("lvm: config needs a path and a volume group")
	}
	root, err := filepath.Abs(cfg.Path)
	if err != nil {
		return nil, fmt.Errorf("lvm: pool path: %w", err)
	}
	d := &Driver{root: root, vg: cfg.VolumeGroup, pool: cfg.ThinPool, size: cfg.VolumeSize, poolSize: cfg.PoolSize, device: cfg.Device, quotas: cfg.ProjectQuotas}
	if d.pool == "" {
		d.pool = DefaultThinPool
	}
	if d.size <= 0 {
		d.size = DefaultVolumeSize
	}
	for _, dir := range []string{d.volumesDir(), d.snapshotsDir(), d.stagingDir()} {
		if err := os.MkdirAll(dir, 0o711); err != nil {
			return nil, fmt.Errorf("lvm: %w", err)
		}
	}
	if cfg.Device == "" && cfg.LoopFile != "" {
		_, statErr := os.Stat(cfg.LoopFile)
		dev, err := attachLoop(ctx, cfg.LoopFile, cfg.LoopSize)
		if err != nil {
			return nil, fmt.Errorf("lvm: %w", err)
		}
		d.device, d.loopFile = dev, cfg.LoopFile
		if errors.Is(statErr, fs.ErrNotExist) {
			// A pool this call started from nothing is undone if it fails.
			defer func() {
				if retErr != nil {
					retErr = errors.Join(retErr, d.Destroy(context.WithoutCancel(ctx)))
				}
			}()
		}
	}
	if err := d.ensureVG(ctx); err != nil {
		return nil, fmt.Errorf("lvm: %w", err)
	}
	if err := d.cleanStaging(ctx); err != nil {
		return nil, fmt.Errorf("lvm: %w", err)
	}
	if err := d.mountAll(ctx); err != nil {
		return nil, fmt.Errorf("lvm: %w", err)
	}
	return d, nil
}

// attachLoop returns the loop device of file, attaching it (and creating
// the file sparse, size bytes, when it is missing).
func attachLoop(ctx context.Context, file string, size int64) (string, error) {
	if _, err := os.Stat(file); errors.Is(err, fs.ErrNotExist) {
		if size <= 0 {
			return "", fmt.Errorf("loop file %s: size %d is not positive", file, size)
		}
		f, err := os.OpenFile(file, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return "", err
		}
		err = f.Truncate(size)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			_ = os.Remove(file)
			return "", err
		}
	}
	out, err := run(ctx, "losetup", "-j", file, "-O", "NAME", "-n")
	if err != nil {
		return "", err
	}
	if dev := strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0]); dev != "" {
		return dev, nil
	}
	out, err = run(ctx, "losetup", "-f", "--show", file)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(out)), nil
}

// ensureVG creates the VG and thin pool when missing and activates them.
func (d *Driver) ensureVG(ctx context.Context) error {
	out, err := run(ctx, "vgs", "--noheadings", "-o", "vg_name")
	if err != nil {
		return err
	}
	exists := false
	for _, f := range strings.Fields(string(out)) {
		exists = exists || f == d.vg
	}
	if !exists {
		if d.device == "" {
			return fmt.Errorf("volume group %s does not exist and the config names no device or loop file: %w", d.vg, storage.ErrNotFound)
		}
		if _, err := run(ctx, "pvcreate", "-q", "-y", "-ff", d.device); err != nil {
			return err
		}
		if _, err := run(ctx, "vgcreate", "-q", d.vg, d.device); err != nil {
			return err
		}
	}
	out, err = run(ctx, "lvs", "--noheadings", "-o", "lv_name", d.vg)
	if err != nil {
		return err
	}
	hasPool := false
	for _, f := range strings.Fields(string(out)) {
		hasPool = hasPool || f == d.pool
	}
	if !hasPool {
		// A full pool fails writes at once instead of queueing them.
		size := []string{"-l", "90%FREE"}
		if d.poolSize > 0 {
			size = []string{"-L", strconv.FormatInt(d.poolSize, 10) + "b"}
		}
		args := append([]string{"-q", "-y", "--type", "thin-pool", "-n", d.pool}, size...)
		if _, err := run(ctx, "lvcreate", append(args, d.vg)...); err != nil {
			return err
		}
		if _, err := run(ctx, "lvchange", "-q", "--errorwhenfull", "y", d.vg+"/"+d.pool); err != nil {
			return err
		}
	}
	if hasPool {
		// After a reboot nothing is active; a new pool and VG are.
		_, err = run(ctx, "vgchange", "-q", "-ay", d.vg)
	}
	return err
}

// Destroy removes the pool: it unmounts everything and removes the thin
// pool with its LVs. When Config named a Device or LoopFile and the VG
// then holds no other LV, it also removes the VG and its PV label,
// detaches the loop device and deletes the loop file. The driver is
// unusable after.
func (d *Driver) Destroy(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var errs []error
	for _, dir := range []string{d.snapshotsDir(), d.volumesDir(), d.stagingDir()} {
		errs = append(errs, unmountTree(ctx, dir))
	}
	d.ix = nil
	// Removing the thin pool removes the thin LVs in it.
	if out, err := run(ctx, "lvs", "--noheadings", "-o", "lv_name", d.vg); err == nil {
		if slices.Contains(strings.Fields(string(out)), d.pool) {
			errs = append(errs, d.remove(ctx, d.pool))
		}
	} else if _, verr := run(ctx, "vgs", d.vg); verr == nil {
		errs = append(errs, err)
	}
	if d.device != "" {
		out, err := run(ctx, "vgs", "--noheadings", "-o", "lv_count", d.vg)
		if err == nil && strings.TrimSpace(string(out)) == "0" {
			_, err := run(ctx, "vgremove", "-q", "-f", d.vg)
			errs = append(errs, err)
			_, err = run(ctx, "pvremove", "-q", "-y", "-ff", d.device)
			errs = append(errs, err)
			if d.loopFile != "" {
				_, err := run(ctx, "losetup", "-d", d.device)
				errs = append(errs, err)
				if err := os.Remove(d.loopFile); err != nil && !errors.Is(err, fs.ErrNotExist) {
					errs = append(errs, err)
				}
			}
		}
	}
	errs = append(errs, os.RemoveAll(d.root))
	return errors.Join(errs...)
}

// unmountTree unmounts every mount beneath dir, deepest first.
func unmountTree(ctx context.Context, dir string) error {
	var mnts []string
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == dir || !e.IsDir() {
			return nil
		}
		if ok, err := isMountpoint(p); err != nil {
			return err
		} else if ok {
			mnts = append(mnts, p)
			return filepath.SkipDir
		}
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	sort.Slice(mnts, func(i, j int) bool { return len(mnts[i]) > len(mnts[j]) })
	var errs []error
	for _, m := range mnts {
		errs = append(errs, unmount(ctx, m))
	}
	return errors.Join(errs...)
}

// Info says what the driver can do.
func (d *Driver) Info() storage.Info {
	return storage.Info{Name: "lvm", CoWClone: true, OptimizedSend: false, Quotas: d.quotas}
}

// Close releases nothing: volumes stay mounted for their containers.
func (d *Driver) Close() error { return nil }

func (d *Driver) volumesDir() string   { return filepath.Join(d.root, "volumes") }
func (d *Driver) snapshotsDir() string { return filepath.Join(d.root, "snapshots") }
func (d *Driver) stagingDir() string   { return filepath.Join(d.root, ".staging") }

// Path is the host path of the volume's root directory (its mountpoint).
func (d *Driver) Path(vol string) string {
	if storage.ValidateVolumeName(vol) != nil {
		return ""
	}
	return filepath.Join(d.volumesDir(), storage.EncodeVolumeName(vol))
}

func (d *Driver) snapDir(vol string) string {
	return filepath.Join(d.snapshotsDir(), storage.EncodeVolumeName(vol))
}

// SnapshotPath is the host path of the snapshot's root directory.
func (d *Driver) SnapshotPath(vol, snap string) string {
	if storage.ValidateVolumeName(vol) != nil || storage.ValidateSnapshotName(snap) != nil {
		return ""
	}
	return filepath.Join(d.snapDir(vol), snap)
}

// dev is the block device of LV name.
func (d *Driver) dev(lv string) string { return "/dev/" + d.vg + "/" + lv }

// lvRef is one of the driver's LVs as its tags describe it.
type lvRef struct {
	name    string
	vol     string // set for a volume
	snapOf  string // set for a snapshot: its volume
	snap    string // and its name
	seq     string
	staging bool
}

// index is the VG's LVs by what they are.
type index struct {
	vols   map[string]lvRef
	snaps  map[string][]lvRef // by volume, in creation order
	stage  []lvRef
	others []string // LVs in the pool that are none of those
}

func (ix *index) snapshot(vol, snap string) (lvRef, bool) {
	for _, s := range ix.snaps[vol] {
		if s.snap == snap {
			return s, true
		}
	}
	return lvRef{}, false
}

// load returns the index of the pool's LVs: the one kept in memory (the
// driver owns its thin pool, and every change goes through it), else
// read from LVM. A method that changes LVs updates the kept index, or
// drops it (invalidate) when a change may have gone half way.
func (d *Driver) load(ctx context.Context) (*index, error) {
	if d.ix != nil {
		return d.ix, nil
	}
	ix, err := d.scan(ctx)
	if err != nil {
		return nil, err
	}
	d.ix = ix
	return ix, nil
}

// invalidate drops the kept index when *err is set.
func (d *Driver) invalidate(err *error) {
	if *err != nil {
		d.ix = nil
	}
}

// scan reads the thin pool's LVs and their tags from LVM.
func (d *Driver) scan(ctx context.Context) (*index, error) {
	out, err := run(ctx, "lvs", "--noheadings", "--separator", "|", "-o", "lv_name,lv_tags,pool_lv", d.vg)
	if err != nil {
		return nil, err
	}
	ix := &index{vols: map[string]lvRef{}, snaps: map[string][]lvRef{}}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Split(strings.TrimSpace(line), "|")
		if len(f) != 3 || f[2] != d.pool {
			continue // another pool's, or the thin pool itself
		}
		name, tags := f[0], f[1]
		r := lvRef{name: name}
		for _, tag := range strings.Split(tags, ",") {
			switch {
			case tag == tagStaging:
				r.staging = true
			case strings.HasPrefix(tag, tagVol):
				r.vol = unhex(tag[len(tagVol):])
			case strings.HasPrefix(tag, tagSnapOf):
				r.snapOf = unhex(tag[len(tagSnapOf):])
			case strings.HasPrefix(tag, tagSnap):
				r.snap = unhex(tag[len(tagSnap):])
			case strings.HasPrefix(tag, tagSeq):
				r.seq = tag[len(tagSeq):]
			}
		}
		switch {
		case r.staging:
			ix.stage = append(ix.stage, r)
		case r.vol != "":
			ix.vols[r.vol] = r
		case r.snapOf != "" && r.snap != "":
			ix.snaps[r.snapOf] = append(ix.snaps[r.snapOf], r)
		default:
			ix.others = append(ix.others, name)
		}
	}
	for _, s := range ix.snaps {
		sort.Slice(s, func(i, j int) bool { return s[i].seq < s[j].seq })
	}
	return ix, nil
}

func unhex(s string) string {
	b, err := hex.DecodeString(s)
	if err != nil {
		return ""
	}
	return string(b)
}

// newLV returns a fresh LV name with the given prefix.
func newLV(prefix string) string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return prefix + "_" + hex.EncodeToString(b[:])
}

// nextSeq returns a sequence tag later than every one this driver made.
func (d *Driver) nextSeq() string {
	n := time.Now().UnixNano()
	if n <= d.lastSeq {
		n = d.lastSeq + 1
	}
	d.lastSeq = n
	return fmt.Sprintf("%s%020d", tagSeq, n)
}

// cleanStaging removes what an interrupted receive or restore left.
func (d *Driver) cleanStaging(ctx context.Context) error {
	if err := unmountTree(ctx, d.stagingDir()); err != nil {
		return err
	}
	ix, err := d.load(ctx)
	if err != nil {
		return err
	}
	for _, r := range ix.stage {
		for _, dir := range []string{d.Path(r.vol), filepath.Join(d.stagingDir(), r.name)} {
			if dir == "" {
				continue
			}
			if mountedAt(dir, d.dev(r.name)) {
				if err := unmount(ctx, dir); err != nil {
					return err
				}
			}
		}
		if err := d.remove(ctx, r.name); err != nil {
			return err
		}
	}
	d.ix = nil
	return nil
}

// mountAll mounts the volumes and snapshots that are not mounted (after
// a reboot, or a first New).
func (d *Driver) mountAll(ctx context.Context) error {
	ix, err := d.load(ctx)
	if err != nil {
		return err
	}
	for vol, r := range ix.vols {
		if err := mount(ctx, d.dev(r.name), d.Path(vol), false); err != nil {
			return err
		}
	}
	for vol, snaps := range ix.snaps {
		for _, s := range snaps {
			if err := mount(ctx, d.dev(s.name), d.SnapshotPath(vol, s.snap), true); err != nil {
				return err
			}
		}
	}
	return nil
}

// remove removes LVs.
func (d *Driver) remove(ctx context.Context, lvs ...string) error {
	if len(lvs) == 0 {
		return nil
	}
	args := []string{"-q", "-f"}
	for _, lv := range lvs {
		args = append(args, d.vg+"/"+lv)
	}
	_, err := run(ctx, "lvremove", args...)
	return err
}
