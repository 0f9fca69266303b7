package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"time"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/internal/config"
	"github.com/shoal-dev/shoal/internal/failpoint"
	"github.com/shoal-dev/shoal/node/idmap"
	"github.com/shoal-dev/shoal/node/images"
	"github.com/shoal-dev/shoal/node/images/simplestreams"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
	"github.com/shoal-dev/shoal/storage"
)

// Progress receives an operation's progress.
type Progress func(phase string, done, total int64, unit string)

// imageVolume returns the pool volume holding image fp's rootfs, unpacking it
// (and, for unprivileged containers, a copy shifted into the node's idmap)
// on first use. Both are built under a staging name and cloned into place, so
// a crash never leaves a half-made image volume behind under the real name.
func (n *Node) imageVolume(ctx context.Context, d storage.Driver, fp string, privileged bool) (string, error) {
	unlock := n.locks.lock("img/" + fp)
	defer unlock()
	if err := n.ensureImage(ctx, fp); err != nil {
		return "", err
	}
	base := "images/" + fp
	if err := n.buildVolume(ctx, d, base, func(path string) error {
		rc, err := n.images.Open(fp)
		if err != nil {
			return err
		}
		defer rc.Close()
		_, err = images.Unpack(ctx, rc, path)
		return err
	}, ""); err != nil {
		return "", fmt.Errorf("unpack image %.12s: %w", fp, err)
	}
	if privileged {
		return base, nil
	}
	shifted := base + "-u" + strconv.FormatUint(uint64(n.idmap.HostUID), 10)
	if err := n.buildVolume(ctx, d, shifted, func(path string) error {
		return idmap.Shift(ctx, path, n.idmap)
	}, base); err != nil {
		return "", fmt.Errorf("shift image %.12s: %w", fp, err)
	}
	return shifted, nil
}

// ensureImage makes sure image fp's tarball is in the local store, pulling
// it from a member that has it. Callers hold the image's lock, so concurrent
// launches of one image share one pull.
func (n *Node) ensureImage(ctx context.Context, fp string) error {
	if _, err := n.images.Get(fp); err == nil || !errors.Is(err, images.ErrNotFound) || n.cfg.FetchImage == nil {
		return err
	}
	n.log.Info("pulling image from a peer", "image", fp)
	var size int64 = -1
	if rec, err := n.fsm.ResolveImage(fp); err == nil {
		size = rec.GetSize()
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(n.cfg.FetchImage(ctx, fp, pw)) }()
	counted := &countingReader{r: pr, total: size, phase: fmt.Sprintf("pulling image %.12s from a peer", fp), f: progressFrom(ctx)}
	img, err := n.images.Add(ctx, counted)
	pr.CloseWithError(err)
	if err != nil {
		return fmt.Errorf("pull image %.12s: %w", fp, err)
	}
	if img.Fingerprint != fp {
		_ = n.images.Delete(img.Fingerprint)
		return fmt.Errorf("pull image %.12s: received content has sha256 %.12s", fp, img.Fingerprint)
	}
	return n.cl.Propose(ctx, &shoalv1.ImageAddCommand{Image: &shoalv1.Image{Fingerprint: fp, Size: img.Size,
		Properties: img.Metadata.Properties, Architecture: img.Metadata.Architecture, Nodes: []string{n.cfg.Name}}})
}

// buildVolume makes volume vol unless it exists: from a clone of from (or
// empty), filled by fill, under a staging name first.
func (n *Node) buildVolume(ctx context.Context, d storage.Driver, vol string, fill func(path string) error, from string) error {
	if ok, err := d.VolumeExists(ctx, vol); err != nil || ok {
		return err
	}
	stage := vol + "-staging"
	_ = d.DeleteVolume(ctx, stage)
	var err error
	if from == "" {
		err = d.CreateVolume(ctx, stage)
	} else {
		err = d.CloneVolume(ctx, from, stage)
	}
	if err != nil {
		return err
	}
	defer d.DeleteVolume(context.Background(), stage)
	if err := fill(d.Path(stage)); err != nil {
		return err
	}
	return d.CloneVolume(ctx, stage, vol)
}

// BuildImage builds an image with one of the builders and adds it to the
// local store.
func (n *Node) BuildImage(ctx context.Context, builder, suite string, p Progress) (images.Image, error) {
	tmp, err := os.MkdirTemp(filepath.Join(n.cfg.StateDir, "tmp"), "build-")
	if err != nil {
		return images.Image{}, err
	}
	defer os.RemoveAll(tmp)
	rootfs := filepath.Join(tmp, "rootfs")
	if err := os.Mkdir(rootfs, 0o755); err != nil {
		return images.Image{}, err
	}
	var md images.Metadata
	switch builder {
	case "busybox":
		p("building busybox rootfs", 0, -1, "")
		md, err = images.BuildBusybox(ctx, rootfs)
	case "debian":
		md, err = images.BuildDebian(ctx, images.DebianOptions{Suite: suite, CacheDir: n.cfg.ImageCacheDir}, rootfs,
			func(phase string, done, total int64) { p(phase, done, total, "") })
	default:
		return images.Image{}, fmt.Errorf("%w: builder %q (allowed: busybox, debian)", images.ErrInvalid, builder)
	}
	if err != nil {
		return images.Image{}, err
	}
	return n.packAndAdd(ctx, rootfs, md, p)
}

// packAndAdd packs a rootfs into an image tarball, adds it to the store and
// unpacks it into the default pool so the first launch is fast.
func (n *Node) packAndAdd(ctx context.Context, rootfs string, md images.Metadata, p Progress) (images.Image, error) {
	p("packing image", 0, -1, "")
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(images.Pack(ctx, rootfs, md, pw)) }()
	img, err := n.images.Add(ctx, pr)
	pr.CloseWithError(err)
	if err != nil {
		return images.Image{}, err
	}
	if err := failpoint.Hit("image-after-store"); err != nil {
		return images.Image{}, err
	}
	p("unpacking image into the pool", 0, -1, "")
	if d, err := n.pool(""); err == nil {
		if _, err := n.imageVolume(ctx, d, img.Fingerprint, false); err != nil {
			return images.Image{}, err
		}
	}
	return img, nil
}

// ImportImage adds an image tarball (Shoal's or LXD's unified format).
func (n *Node) ImportImage(ctx context.Context, r io.Reader) (images.Image, error) {
	img, err := images.Import(ctx, n.images, r)
	if err != nil {
		return img, err
	}
	return img, failpoint.Hit("image-after-store")
}

// ExportImage opens an image tarball.
func (n *Node) ExportImage(fp string) (io.ReadCloser, images.Image, error) {
	img, err := n.images.Get(fp)
	if err != nil {
		return nil, images.Image{}, err
	}
	rc, err := n.images.Open(fp)
	return rc, img, err
}

// LocalImage returns an image held in this node's store.
func (n *Node) LocalImage(fp string) (images.Image, error) { return n.images.Get(fp) }

// DeleteImage removes an image from this host: its tarball and unpacked
// volumes. Containers made from it are independent copies and stay.
func (n *Node) DeleteImage(ctx context.Context, fp string) error {
	unlock := n.locks.lock("img/" + fp)
	defer unlock()
	n.poolsMu.RLock()
	for _, d := range n.pools {
		for _, v := range []string{"images/" + fp, "images/" + fp + "-u" + strconv.FormatUint(uint64(n.idmap.HostUID), 10)} {
			if err := d.DeleteVolume(ctx, v); err != nil && !errors.Is(err, storage.ErrNotFound) {
				n.poolsMu.RUnlock()
				return err
			}
		}
	}
	n.poolsMu.RUnlock()
	if err := n.images.Delete(fp); err != nil && !errors.Is(err, images.ErrNotFound) {
		return err
	}
	return nil
}

// PublishImage turns a container (a consistent snapshot of it taken now) or
// one of its snapshots into an image with container-relative ownership.
func (n *Node) PublishImage(ctx context.Context, ct *shoalv1.Container, snap string, props map[string]string, p Progress) (images.Image, error) {
	d, err := n.pool(ct.GetPool())
	if err != nil {
		return images.Image{}, err
	}
	vol := volumeName(ct.GetName())
	if snap == "" {
		snap = fmt.Sprintf("publish-%d", time.Now().UnixNano())
		if err := d.CreateSnapshot(ctx, vol, snap); err != nil {
			return images.Image{}, fmt.Errorf("snapshot %s: %w", ct.GetName(), err)
		}
		defer d.DeleteSnapshot(context.Background(), vol, snap)
	}
	p("copying rootfs", 0, -1, "")
	work := fmt.Sprintf("tmp/publish-%s-%d", ct.GetName(), time.Now().UnixNano())
	if err := d.CloneSnapshot(ctx, vol, snap, work); err != nil {
		return images.Image{}, fmt.Errorf("copy %s/%s: %w", ct.GetName(), snap, err)
	}
	defer d.DeleteVolume(context.Background(), work)
	if err := failpoint.Hit("publish-after-clone"); err != nil {
		return images.Image{}, err
	}
	if !config.Bool(cluster.ExpandedConfig(ct), "security.privileged") {
		if err := idmap.Unshift(ctx, d.Path(work), n.idmap); err != nil {
			return images.Image{}, fmt.Errorf("unshift %s: %w", ct.GetName(), err)
		}
	}
	md := images.Metadata{Architecture: "x86_64", CreationDate: time.Now().Unix(), Properties: map[string]string{}}
	if src, err := n.images.Get(ct.GetImageFingerprint()); err == nil {
		for k, v := range src.Metadata.Properties {
			md.Properties[k] = v
		}
	}
	md.Properties["description"] = "published from " + ct.GetName()
	for k, v := range props {
		md.Properties[k] = v
	}
	return n.packAndAdd(ctx, d.Path(work), md, p)
}

// ImageSource is an image on a remote image server (simplestreams).
type ImageSource struct {
	// Server is https://HOST[:PORT][/PATH]; Image an alias, product or
	// fingerprint prefix there.
	Server, Image string
	// CertFingerprint pins the server's certificate (empty: the system's
	// CAs decide).
	CertFingerprint string
	// AutoUpdate marks the image to follow Image on the server.
	AutoUpdate bool
}

// Image properties recording where a pulled image came from.
const (
	PropSourceServer      = "source.server"
	PropSourceImage       = "source.image"
	PropSourceFingerprint = "source.fingerprint"
	PropSourceCertificate = "source.certificate"
	PropSourceAutoUpdate  = cluster.ImageAutoUpdate
)

// ResolveRemote finds the image src names on its server, for this host's
// architecture.
func ResolveRemote(ctx context.Context, src ImageSource) (simplestreams.Image, error) {
	c, err := simplestreams.NewClient(src.Server, src.CertFingerprint)
	if err != nil {
		return simplestreams.Image{}, err
	}
	return c.Resolve(ctx, src.Image, runtime.GOARCH)
}

// PullImage brings the image src names into this member's store: resolved
// on the server for this host's architecture, downloaded (sizes and
// sha256 checked), unpacked from its squashfs and packed as a unified
// image carrying its source in source.* properties. An image the cluster
// already holds from the same remote fingerprint is not downloaded again
// (a member lacking it fetches it from a peer); cached reports that.
func (n *Node) PullImage(ctx context.Context, src ImageSource, p Progress) (img images.Image, cached bool, err error) {
	c, err := simplestreams.NewClient(src.Server, src.CertFingerprint)
	if err != nil {
		return images.Image{}, false, err
	}
	remote, err := c.Resolve(ctx, src.Image, runtime.GOARCH)
	if err != nil {
		return images.Image{}, false, err
	}
	for _, rec := range n.fsm.Images() {
		if rec.GetProperties()[PropSourceFingerprint] != remote.Fingerprint {
			continue
		}
		unlock := n.locks.lock("img/" + rec.GetFingerprint())
		err := n.ensureImage(ctx, rec.GetFingerprint())
		unlock()
		if err != nil {
			return images.Image{}, false, err
		}
		img, err := n.images.Get(rec.GetFingerprint())
		return img, true, err
	}
	tmp, err := os.MkdirTemp(filepath.Join(n.cfg.StateDir, "tmp"), "pull-")
	if err != nil {
		return images.Image{}, false, err
	}
	defer os.RemoveAll(tmp)
	phase := fmt.Sprintf("downloading %s from %s", src.Image, src.Server)
	meta, rootfs, unified, err := c.Download(ctx, remote, tmp, func(done, total int64) {
		if p != nil {
			p(phase, done, total, "bytes")
		}
	})
	if err != nil {
		return images.Image{}, false, err
	}
	props := map[string]string{PropSourceServer: src.Server, PropSourceImage: src.Image, PropSourceFingerprint: remote.Fingerprint}
	if src.CertFingerprint != "" {
		props[PropSourceCertificate] = src.CertFingerprint
	}
	if src.AutoUpdate {
		props[PropSourceAutoUpdate] = "true"
	}
	if p != nil {
		p("unpacking", 0, -1, "")
	}
	if !remote.Split() {
		// A unified image goes in as it is (its properties are its own).
		f, err := os.Open(unified)
		if err != nil {
			return images.Image{}, false, err
		}
		defer f.Close()
		img, err := n.images.Add(ctx, f)
		return img, false, err
	}
	work := filepath.Join(tmp, "work")
	if err := os.Mkdir(work, 0o700); err != nil {
		return images.Image{}, false, err
	}
	pr, pw := io.Pipe()
	go func() {
		_, err := simplestreams.Unify(ctx, meta, rootfs, work, props, pw)
		pw.CloseWithError(err)
	}()
	img, err = n.images.Add(ctx, pr)
	pr.CloseWithError(err)
	if err != nil {
		return images.Image{}, false, fmt.Errorf("pull %s from %s: %w", src.Image, src.Server, err)
	}
	return img, false, nil
}
