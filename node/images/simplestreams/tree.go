package simplestreams

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/shoal-dev/shoal/node/images"
)

// TreeImage is one split image to publish.
type TreeImage struct {
	// Meta and Squashfs are its files (moved into the tree).
	Meta, Squashfs string
	// Metadata is its metadata.yaml: os, release, variant, architecture.
	Metadata images.Metadata
	// Aliases are published besides os/release and os/release/variant.
	Aliases []string
}

// archNames maps the kernel's architecture names to simplestreams'.
var archNames = map[string]string{"x86_64": "amd64", "aarch64": "arm64", "armv7l": "armhf", "i686": "i386",
	"ppc64le": "ppc64el", "s390x": "s390x", "riscv64": "riscv64"}

// Arch is simplestreams' name of a kernel architecture name (x86_64 →
// amd64); an unknown one is kept.
func Arch(kernel string) string {
	if a, ok := archNames[kernel]; ok {
		return a
	}
	return kernel
}

// WriteTree writes a simplestreams tree of imgs into dir:
// streams/v1/index.json, streams/v1/images.json, and each image's files
// under images/FINGERPRINT/. One product per os:release:arch:variant; an
// image of a product already written becomes a newer version of it.
func WriteTree(dir string, imgs []TreeImage) error {
	p := products{ContentID: "images", DataType: "image-downloads", Format: "products:1.0", Products: map[string]product{}}
	for i, img := range imgs {
		props := img.Metadata.Properties
		osName := strings.ToLower(props["os"])
		rel := props["release"]
		variant := props["variant"]
		if variant == "" {
			variant = "default"
		}
		arch := Arch(img.Metadata.Architecture)
		if osName == "" || rel == "" || arch == "" {
			return fmt.Errorf("%w: image %d has no os, release or architecture in its metadata", ErrInvalid, i)
		}
		name := strings.Join([]string{osName, rel, arch, variant}, ":")
		combined := sha256.New()
		metaSum, metaSize, err := sum(img.Meta, combined)
		if err != nil {
			return err
		}
		sqSum, sqSize, err := sum(img.Squashfs, combined)
		if err != nil {
			return err
		}
		fp := hex.EncodeToString(combined.Sum(nil))
		rel2 := filepath.Join("images", fp)
		if err := os.MkdirAll(filepath.Join(dir, rel2), 0o755); err != nil {
			return err
		}
		metaPath, sqPath := filepath.ToSlash(filepath.Join(rel2, FTypeMeta)), filepath.ToSlash(filepath.Join(rel2, "root.squashfs"))
		for src, dst := range map[string]string{img.Meta: metaPath, img.Squashfs: sqPath} {
			if err := moveFile(src, filepath.Join(dir, dst)); err != nil {
				return err
			}
		}
		pr, ok := p.Products[name]
		if !ok {
			pr = product{Aliases: osName + "/" + rel + "," + osName + "/" + rel + "/" + variant, Arch: arch, OS: props["os"], Release: rel, ReleaseTitle: rel,
				Variant: variant, Versions: map[string]version{}}
		}
		// A product's aliases are those of all its images.
		aliases := strings.Split(pr.Aliases, ",")
		for _, a := range img.Aliases {
			if !containsStr(aliases, a) {
				aliases = append(aliases, a)
			}
		}
		pr.Aliases = strings.Join(aliases, ",")
		// Versions sort by build time: the newest is what aliases resolve to.
		created := time.Unix(img.Metadata.CreationDate, 0).UTC()
		ver := created.Format("20060102_15:04:05") + fmt.Sprintf("_%02d", len(pr.Versions))
		pr.Versions[ver] = version{Items: map[string]Item{
			FTypeMeta:       {FType: FTypeMeta, Path: metaPath, SHA256: metaSum, Size: metaSize, CombinedSquashfsSHA256: fp},
			"root.squashfs": {FType: FTypeSquashfs, Path: sqPath, SHA256: sqSum, Size: sqSize},
		}}
		p.Products[name] = pr
	}
	names := make([]string, 0, len(p.Products))
	for n := range p.Products {
		names = append(names, n)
	}
	sort.Strings(names)
	idx := index{Format: "index:1.0", Index: map[string]indexEntry{
		"images": {DataType: "image-downloads", Path: "streams/v1/images.json", Format: "products:1.0", Products: names},
	}}
	if err := os.MkdirAll(filepath.Join(dir, "streams", "v1"), 0o755); err != nil {
		return err
	}
	for file, v := range map[string]any{"images.json": p, "index.json": idx} {
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, "streams", "v1", file), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func containsStr(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// sum hashes a file (also into extra) and returns its sha256 and size.
func sum(path string, extra io.Writer) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	w := io.Writer(h)
	if extra != nil {
		w = io.MultiWriter(h, extra)
	}
	n, err := io.Copy(w, f)
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// moveFile renames src to dst, copying across filesystems.
func moveFile(src, dst string) error {
	if err := os.Rename(src, dst); err == nil {
		return nil
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Remove(src)
}
