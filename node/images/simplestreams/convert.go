package simplestreams

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"

	"github.com/ulikunitz/xz"

	"github.com/shoal-dev/shoal/node/images"
)

// Unify turns a split image (its metadata tarball and squashfs) into a
// unified image tarball written to w, with props added to its metadata's
// properties. workDir is an empty directory it may fill (the caller
// removes it); unsquashfs runs there as the caller (root keeps owners).
func Unify(ctx context.Context, meta, squashfs, workDir string, props map[string]string, w io.Writer) (images.Metadata, error) {
	md, err := readMeta(meta)
	if err != nil {
		return images.Metadata{}, err
	}
	rootfs := filepath.Join(workDir, "rootfs")
	if out, err := exec.CommandContext(ctx, "unsquashfs", "-no-progress", "-quiet", "-f", "-d", rootfs, squashfs).CombinedOutput(); err != nil {
		return images.Metadata{}, fmt.Errorf("%w: unsquashfs: %v: %s", ErrInvalid, err, bytes.TrimSpace(out))
	}
	if md.Properties == nil {
		md.Properties = map[string]string{}
	}
	for k, v := range props {
		md.Properties[k] = v
	}
	if err := images.Pack(ctx, rootfs, md, w); err != nil {
		return images.Metadata{}, err
	}
	return md, nil
}

// readMeta reads metadata.yaml from a metadata tarball (xz, gzip or
// plain).
func readMeta(path string) (images.Metadata, error) {
	f, err := os.Open(path)
	if err != nil {
		return images.Metadata{}, err
	}
	defer f.Close()
	var r io.Reader = f
	if xr, err := xz.NewReader(f); err == nil {
		r = xr
	} else if _, err := f.Seek(0, io.SeekStart); err != nil {
		return images.Metadata{}, err
	}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return images.Metadata{}, fmt.Errorf("%w: the metadata tarball has no metadata.yaml", ErrInvalid)
		}
		if err != nil {
			return images.Metadata{}, fmt.Errorf("%w: metadata tarball: %v", ErrInvalid, err)
		}
		if filepath.Clean(h.Name) != "metadata.yaml" {
			continue
		}
		b, err := io.ReadAll(io.LimitReader(tr, 1<<20))
		if err != nil {
			return images.Metadata{}, fmt.Errorf("%w: metadata.yaml: %v", ErrInvalid, err)
		}
		return images.ParseMetadata(b)
	}
}

// Split makes a split image's files from a unified image tarball: the
// metadata tarball (lxd.tar.xz, metadata.yaml alone) and the squashfs of
// its root filesystem (root.squashfs), both in workDir, an empty directory
// (the rootfs is unpacked under it first; run as root to keep owners).
func Split(ctx context.Context, unified io.Reader, workDir string) (meta, squashfs string, md images.Metadata, err error) {
	rootfs := filepath.Join(workDir, "rootfs")
	if err := os.Mkdir(rootfs, 0o755); err != nil {
		return "", "", images.Metadata{}, err
	}
	if md, err = images.Unpack(ctx, unified, rootfs); err != nil {
		return "", "", images.Metadata{}, err
	}
	b, err := images.MarshalMetadata(md)
	if err != nil {
		return "", "", images.Metadata{}, err
	}
	meta = filepath.Join(workDir, FTypeMeta)
	if err := writeMetaTarball(meta, b); err != nil {
		return "", "", images.Metadata{}, err
	}
	squashfs = filepath.Join(workDir, "root.squashfs")
	out, err := exec.CommandContext(ctx, "mksquashfs", rootfs, squashfs, "-noappend", "-no-progress", "-quiet",
		"-processors", fmt.Sprint(max(1, runtime.NumCPU()))).CombinedOutput()
	if err != nil {
		return "", "", images.Metadata{}, fmt.Errorf("mksquashfs: %v: %s", err, bytes.TrimSpace(out))
	}
	return meta, squashfs, md, nil
}

func writeMetaTarball(path string, metadata []byte) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	xw, err := xz.NewWriter(f)
	if err != nil {
		f.Close()
		return err
	}
	tw := tar.NewWriter(xw)
	err = tw.WriteHeader(&tar.Header{Name: "metadata.yaml", Mode: 0o644, Size: int64(len(metadata)), Typeflag: tar.TypeReg})
	if err == nil {
		_, err = tw.Write(metadata)
	}
	for _, c := range []io.Closer{tw, xw, f} {
		if cerr := c.Close(); err == nil {
			err = cerr
		}
	}
	return err
}
