package simplestreams

import (
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"
)

// Sentinel errors; test with errors.Is.
var (
	// ErrNotFound: no image on the server matches.
	ErrNotFound = errors.New("image not found on the server")
	// ErrInvalid: the server's index or a file does not hold what it must.
	ErrInvalid = errors.New("invalid simplestreams data")
	// ErrStalled: the server sent nothing for longer than the client's
	// idle timeout in the middle of a file.
	ErrStalled = errors.New("image server stalled")
)

// Item types (ftype) this package reads.
const (
	FTypeMeta     = "lxd.tar.xz"
	FTypeSquashfs = "squashfs"
	FTypeUnified  = "lxd_combined.tar.gz"
	// incus.tar.xz is the Incus servers' name for the metadata tarball.
	ftypeMetaIncus = "incus.tar.xz"
)

// index is streams/v1/index.json.
type index struct {
	Format string                `json:"format"`
	Index  map[string]indexEntry `json:"index"`
}

type indexEntry struct {
	DataType string   `json:"datatype"`
	Path     string   `json:"path"`
	Format   string   `json:"format,omitempty"`
	Products []string `json:"products"`
}

// products is a products file (streams/v1/images.json).
type products struct {
	ContentID string             `json:"content_id"`
	DataType  string             `json:"datatype"`
	Format    string             `json:"format"`
	Products  map[string]product `json:"products"`
}

type product struct {
	Aliases      string             `json:"aliases"`
	Arch         string             `json:"arch"`
	OS           string             `json:"os"`
	Release      string             `json:"release"`
	ReleaseTitle string             `json:"release_title,omitempty"`
	Variant      string             `json:"variant,omitempty"`
	Versions     map[string]version `json:"versions"`
}

type version struct {
	Items map[string]Item `json:"items"`
}

// Item is one file of an image version.
type Item struct {
	FType  string `json:"ftype"`
	Path   string `json:"path"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
	// On a metadata tarball: the fingerprint of it with the squashfs.
	CombinedSquashfsSHA256 string `json:"combined_squashfs_sha256,omitempty"`
}

// Image is one version of one product, as a client sees it.
type Image struct {
	// Fingerprint identifies the image (see the package comment).
	Fingerprint string
	// Product is os:release:arch:variant; Version its date-like version.
	Product, Version string
	OS, Release      string
	Variant, Arch    string
	// Aliases are the product's, as the server lists them.
	Aliases []string
	// Meta and Rootfs are a split image's files; Unified the tarball of a
	// unified one.
	Meta, Rootfs, Unified Item
}

// Size is the bytes a download of the image takes.
func (i Image) Size() int64 { return i.Meta.Size + i.Rootfs.Size + i.Unified.Size }

// Split reports whether the image is a metadata tarball and a squashfs.
func (i Image) Split() bool { return i.Unified.Path == "" }

// images lists every complete version of every product in a products file,
// newest version first within a product, products by name.
func (p products) images() []Image {
	var out []Image
	names := make([]string, 0, len(p.Products))
	for n := range p.Products {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		pr := p.Products[name]
		vers := make([]string, 0, len(pr.Versions))
		for v := range pr.Versions {
			vers = append(vers, v)
		}
		sort.Sort(sort.Reverse(sort.StringSlice(vers)))
		for _, v := range vers {
			img, ok := imageOf(name, v, pr, pr.Versions[v])
			if ok {
				out = append(out, img)
			}
		}
	}
	return out
}

// imageOf reads one version's items: a metadata tarball with a squashfs
// (and the combined fingerprint), or a unified tarball.
func imageOf(name, ver string, pr product, v version) (Image, bool) {
	img := Image{Product: name, Version: ver, OS: pr.OS, Release: pr.Release, Variant: pr.Variant, Arch: pr.Arch}
	for _, a := range strings.Split(pr.Aliases, ",") {
		if a = strings.TrimSpace(a); a != "" {
			img.Aliases = append(img.Aliases, a)
		}
	}
	for _, it := range v.Items {
		switch it.FType {
		case FTypeMeta, ftypeMetaIncus:
			img.Meta = it
		case FTypeSquashfs:
			img.Rootfs = it
		case FTypeUnified:
			img.Unified = it
		}
	}
	switch {
	case img.Meta.Path != "" && img.Rootfs.Path != "" && img.Meta.CombinedSquashfsSHA256 != "":
		img.Fingerprint = img.Meta.CombinedSquashfsSHA256
		img.Unified = Item{}
	case img.Unified.Path != "" && img.Unified.SHA256 != "":
		img.Fingerprint = img.Unified.SHA256
		img.Meta, img.Rootfs = Item{}, Item{}
	default:
		return Image{}, false
	}
	return img, true
}

// checkPath refuses a file path that leaves the server's tree.
func checkPath(p string) error {
	if p == "" || strings.HasPrefix(p, "/") || strings.Contains(p, "://") || strings.Contains(p, "\\") {
		return fmt.Errorf("%w: file path %q", ErrInvalid, p)
	}
	for _, part := range strings.Split(path.Clean(p), "/") {
		if part == ".." {
			return fmt.Errorf("%w: file path %q leaves the tree", ErrInvalid, p)
		}
	}
	return nil
}

// resolve finds the image a reference names: an alias (newest version of
// the product that lists it for arch, or has the alias with an /ARCH
// suffix), a product name, or a fingerprint prefix.
func resolve(all []Image, ref, arch string) (Image, error) {
	if ref == "" {
		return Image{}, fmt.Errorf("%w: an alias or fingerprint is required", ErrInvalid)
	}
	for _, img := range all { // newest first within each product
		if img.Arch != arch {
			continue
		}
		if img.Product == ref {
			return img, nil
		}
		for _, a := range img.Aliases {
			if a == ref || a+"/"+arch == ref {
				return img, nil
			}
		}
	}
	var hits []Image
	for _, img := range all {
		if len(ref) >= 12 && strings.HasPrefix(img.Fingerprint, ref) {
			hits = append(hits, img)
		}
	}
	switch len(hits) {
	case 1:
		return hits[0], nil
	case 0:
		return Image{}, fmt.Errorf("%w: no image %q for %s", ErrNotFound, ref, arch)
	}
	return Image{}, fmt.Errorf("%w: fingerprint prefix %q matches %d images", ErrInvalid, ref, len(hits))
}
