package images

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"runtime"
	"slices"
	"strings"
)

// This file reads OCI image layouts and `docker save` archives, both as one
// tar archive (plain or compressed): which image it holds (index.json or
// manifest.json), its config and its layers, every blob checked against
// its sha256 digest and size. oci_layers.go applies the layers;
// oci_import.go turns the result into a unified image.

// Media types Shoal reads.
const (
	mediaOCIIndex        = "application/vnd.oci.image.index.v1+json"
	mediaOCIManifest     = "application/vnd.oci.image.manifest.v1+json"
	mediaOCIConfig       = "application/vnd.oci.image.config.v1+json"
	mediaDockerList      = "application/vnd.docker.distribution.manifest.list.v2+json"
	mediaDockerManifest  = "application/vnd.docker.distribution.manifest.v2+json"
	mediaDockerConfig    = "application/vnd.docker.container.image.v1+json"
	annotationRefName    = "org.opencontainers.image.ref.name"
	annotationImageName  = "io.containerd.image.name"
	maxJSONBlob          = 16 << 20 // index, manifest and config blobs
	maxIndexDepth        = 4        // nested indexes
	ociLayoutFile        = "oci-layout"
	ociIndexFile         = "index.json"
	dockerManifestFile   = "manifest.json"
	supportedLayerMedias = "application/vnd.oci.image.layer.v1.tar, +gzip, +zstd, application/vnd.docker.image.rootfs.diff.tar.gzip"
)

// layerCompression says how a layer media type is compressed, or why it
// cannot be read.
func layerCompression(mediaType string) (string, error) {
	switch mediaType {
	case "", // docker save's layer.tar (no descriptor)
		"application/vnd.oci.image.layer.v1.tar",
		"application/vnd.oci.image.layer.nondistributable.v1.tar",
		"application/vnd.docker.image.rootfs.diff.tar":
		return "none", nil
	case "application/vnd.oci.image.layer.v1.tar+gzip",
		"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
		"application/vnd.docker.image.rootfs.diff.tar.gzip",
		"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip":
		return "gzip", nil
	case "application/vnd.oci.image.layer.v1.tar+zstd",
		"application/vnd.oci.image.layer.nondistributable.v1.tar+zstd":
		return "zstd", nil
	}
	return "", fmt.Errorf("%w: layer media type %q is not supported (supported: %s)", ErrInvalid, mediaType, supportedLayerMedias)
}

// descriptor is an OCI content descriptor.
type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Platform    *platform         `json:"platform,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// platform is a descriptor's platform.
type platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
	Variant      string `json:"variant,omitempty"`
}

// ociIndex is index.json or a nested image index (or a Docker manifest list).
type ociIndex struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType,omitempty"`
	Manifests     []descriptor `json:"manifests"`
}

// ociManifest is an image manifest (OCI, or Docker's schema 2).
type ociManifest struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType,omitempty"`
	Config        descriptor   `json:"config"`
	Layers        []descriptor `json:"layers"`
}

// OCIConfig is the part of an OCI image config Shoal uses.
type OCIConfig struct {
	Created      string `json:"created,omitempty"`
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
	Variant      string `json:"variant,omitempty"`
	Config       struct {
		User       string            `json:"User,omitempty"`
		Env        []string          `json:"Env,omitempty"`
		Entrypoint []string          `json:"Entrypoint,omitempty"`
		Cmd        []string          `json:"Cmd,omitempty"`
		WorkingDir string            `json:"WorkingDir,omitempty"`
		Labels     map[string]string `json:"Labels,omitempty"`
		StopSignal string            `json:"StopSignal,omitempty"`
	} `json:"config"`
	RootFS struct {
		Type    string   `json:"type"`
		DiffIDs []string `json:"diff_ids"`
	} `json:"rootfs"`
}

// dockerManifestEntry is one image of docker save's manifest.json.
type dockerManifestEntry struct {
	Config   string   `json:"Config"`
	RepoTags []string `json:"RepoTags"`
	Layers   []string `json:"Layers"`
}

// archiveEntry is one member of the archive: where its data is in the
// plain tar file.
type archiveEntry struct {
	offset, size int64
	typ          byte
	link         string
}

// ociArchive is an uncompressed tar archive opened for random access.
type ociArchive struct {
	f       *os.File
	entries map[string]archiveEntry
}

// openOCIArchive indexes the plain tar archive f.
func openOCIArchive(ctx context.Context, f *os.File) (*ociArchive, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	a := &ociArchive{f: f, entries: map[string]archiveEntry{}}
	tr := tar.NewReader(f)
	for n := 0; ; n++ {
		if n%256 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: not a tar archive: %v", ErrInvalid, err)
		}
		name, err := cleanName(hdr.Name)
		if err != nil {
			return nil, err
		}
		if err := refuseSparse(hdr); err != nil {
			return nil, err
		}
		off, err := f.Seek(0, io.SeekCurrent)
		if err != nil {
			return nil, err
		}
		a.entries[name] = archiveEntry{offset: off, size: hdr.Size, typ: hdr.Typeflag, link: hdr.Linkname}
	}
	return a, nil
}

// open returns the data of the regular file name, following symlinks and
// hard links within the archive (docker save links identical layers).
func (a *ociArchive) open(name string) (*io.SectionReader, error) {
	for hops := 0; hops < 16; hops++ {
		e, ok := a.entries[name]
		if !ok {
			return nil, fmt.Errorf("%w: %s is missing from the archive", ErrInvalid, name)
		}
		switch e.typ {
		case tar.TypeReg, tar.TypeRegA:
			return io.NewSectionReader(a.f, e.offset, e.size), nil
		case tar.TypeSymlink:
			target := e.link
			if !strings.HasPrefix(target, "/") {
				target = path.Join(path.Dir(name), target)
			}
			clean, err := cleanName(strings.TrimPrefix(target, "/"))
			if err != nil || strings.HasPrefix(e.link, "/") {
				return nil, fmt.Errorf("%w: %s links outside the archive (%s)", ErrInvalid, name, e.link)
			}
			name = clean
		case tar.TypeLink:
			clean, err := cleanName(e.link)
			if err != nil {
				return nil, err
			}
			name = clean
		default:
			return nil, fmt.Errorf("%w: %s is not a regular file in the archive", ErrInvalid, name)
		}
	}
	return nil, fmt.Errorf("%w: %s: too many links", ErrInvalid, name)
}

// has reports whether the archive holds name.
func (a *ociArchive) has(name string) bool {
	_, ok := a.entries[name]
	return ok
}

// readSmall reads a whole small file of the archive.
func (a *ociArchive) readSmall(name string) ([]byte, error) {
	r, err := a.open(name)
	if err != nil {
		return nil, err
	}
	if r.Size() > maxJSONBlob {
		return nil, fmt.Errorf("%w: %s is %d bytes (at most %d)", ErrInvalid, name, r.Size(), maxJSONBlob)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	return b, nil
}

// blobPath checks a digest and returns its blob's name in a layout.
func blobPath(digest string) (string, error) {
	alg, hexd, ok := strings.Cut(digest, ":")
	if !ok {
		return "", fmt.Errorf("%w: digest %q is not ALGORITHM:HEX", ErrInvalid, digest)
	}
	if alg != "sha256" {
		return "", fmt.Errorf("%w: digest %q: only sha256 digests are supported", ErrInvalid, digest)
	}
	if len(hexd) != sha256.Size*2 || !isHex(hexd) {
		return "", fmt.Errorf("%w: digest %q is not a sha256 digest", ErrInvalid, digest)
	}
	return "blobs/sha256/" + hexd, nil
}

// readBlob reads a small blob and checks its size and digest.
func (a *ociArchive) readBlob(d descriptor) ([]byte, error) {
	p, err := blobPath(d.Digest)
	if err != nil {
		return nil, err
	}
	if !a.has(p) {
		return nil, fmt.Errorf("%w: blob %s (%s) is missing from the archive", ErrInvalid, d.Digest, d.MediaType)
	}
	b, err := a.readSmall(p)
	if err != nil {
		return nil, err
	}
	if err := checkDigest(d.Digest, d.Size, sha256.Sum256(b), int64(len(b))); err != nil {
		return nil, err
	}
	return b, nil
}

// checkDigest compares content's sha256 and size with what a descriptor
// says (size < 0: not given).
func checkDigest(digest string, size int64, sum [sha256.Size]byte, n int64) error {
	if got := "sha256:" + hex.EncodeToString(sum[:]); got != digest {
		return fmt.Errorf("%w: blob %s: digest mismatch (the content's is %s)", ErrInvalid, digest, got)
	}
	if size >= 0 && n != size {
		return fmt.Errorf("%w: blob %s: size mismatch (%d bytes, the descriptor says %d)", ErrInvalid, digest, n, size)
	}
	return nil
}

// ociLayer is one layer to apply.
type ociLayer struct {
	name        string // the archive member holding it
	mediaType   string
	digest      string // the blob's digest ("" when unknown: docker save)
	size        int64  // -1 when unknown
	diffID      string // the uncompressed tar's digest (the config's rootfs.diff_ids)
	compression string // none, gzip or zstd
}

// ociImage is the image an archive's index selects.
type ociImage struct {
	format   string   // "oci" or "docker-save"
	refs     []string // its names (ref annotations, RepoTags)
	manifest string   // the manifest's digest ("" for old docker save)
	config   OCIConfig
	layers   []ociLayer
}

// candidate is a manifest an index lists.
type candidate struct {
	desc descriptor
	refs []string
}

// selectImage reads the archive's index (index.json, else manifest.json)
// and returns the image to import: the only one, the one named ref, or
// the one for this host's platform.
func (a *ociArchive) selectImage(ref string) (*ociImage, error) {
	if a.has(ociIndexFile) {
		return a.selectOCI(ref)
	}
	if a.has(dockerManifestFile) {
		return a.selectDocker(ref)
	}
	return nil, fmt.Errorf("%w: no index.json or manifest.json: not an OCI image layout or docker save archive", ErrInvalid)
}

// selectOCI picks a manifest of an OCI layout.
func (a *ociArchive) selectOCI(ref string) (*ociImage, error) {
	lb, err := a.readSmall(ociLayoutFile)
	if err != nil {
		return nil, fmt.Errorf("%w: OCI layout without an oci-layout file", ErrInvalid)
	}
	var layout struct {
		Version string `json:"imageLayoutVersion"`
	}
	if err := json.Unmarshal(lb, &layout); err != nil || layout.Version != "1.0.0" {
		return nil, fmt.Errorf("%w: oci-layout: imageLayoutVersion %q is not 1.0.0", ErrInvalid, layout.Version)
	}
	ib, err := a.readSmall(ociIndexFile)
	if err != nil {
		return nil, err
	}
	var cands []candidate
	if err := a.collect(ib, "index.json", nil, 0, &cands); err != nil {
		return nil, err
	}
	c, err := pick(cands, ref)
	if err != nil {
		return nil, err
	}
	mb, err := a.readBlob(c.desc)
	if err != nil {
		return nil, err
	}
	var m ociManifest
	if err := json.Unmarshal(mb, &m); err != nil {
		return nil, fmt.Errorf("%w: manifest %s: %v", ErrInvalid, c.desc.Digest, err)
	}
	if m.Config.MediaType != mediaOCIConfig && m.Config.MediaType != mediaDockerConfig {
		return nil, fmt.Errorf("%w: manifest %s: config media type %q is not an image config", ErrInvalid, c.desc.Digest, m.Config.MediaType)
	}
	cb, err := a.readBlob(m.Config)
	if err != nil {
		return nil, err
	}
	img := &ociImage{format: "oci", refs: c.refs, manifest: c.desc.Digest}
	if err := json.Unmarshal(cb, &img.config); err != nil {
		return nil, fmt.Errorf("%w: image config %s: %v", ErrInvalid, m.Config.Digest, err)
	}
	for i, l := range m.Layers {
		comp, err := layerCompression(l.MediaType)
		if err != nil {
			return nil, fmt.Errorf("layer %d of %d: %w", i+1, len(m.Layers), err)
		}
		p, err := blobPath(l.Digest)
		if err != nil {
			return nil, err
		}
		if !a.has(p) {
			return nil, fmt.Errorf("%w: layer %d of %d: blob %s is missing from the archive", ErrInvalid, i+1, len(m.Layers), l.Digest)
		}
		img.layers = append(img.layers, ociLayer{name: p, mediaType: l.MediaType, digest: l.Digest, size: l.Size, compression: comp})
	}
	return img, img.attachDiffIDs()
}

// collect gathers the manifests an index lists, descending into nested
// indexes.
func (a *ociArchive) collect(b []byte, what string, refs []string, depth int, out *[]candidate) error {
	if depth > maxIndexDepth {
		return fmt.Errorf("%w: %s: indexes nested more than %d deep", ErrInvalid, what, maxIndexDepth)
	}
	var idx ociIndex
	if err := json.Unmarshal(b, &idx); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrInvalid, what, err)
	}
	if idx.SchemaVersion != 2 {
		return fmt.Errorf("%w: %s: schemaVersion %d is not 2", ErrInvalid, what, idx.SchemaVersion)
	}
	for _, d := range idx.Manifests {
		r := refs
		for _, k := range []string{annotationImageName, annotationRefName} {
			if v := d.Annotations[k]; v != "" && !slices.Contains(r, v) {
				r = append(slices.Clone(r), v)
			}
		}
		switch d.MediaType {
		case mediaOCIManifest, mediaDockerManifest:
			*out = append(*out, candidate{desc: d, refs: r})
		case mediaOCIIndex, mediaDockerList:
			nb, err := a.readBlob(d)
			if err != nil {
				return err
			}
			if err := a.collect(nb, "index "+d.Digest, r, depth+1, out); err != nil {
				return err
			}
		default:
			logger().Debug("oci: skipping index entry", "digest", d.Digest, "mediaType", d.MediaType)
		}
	}
	return nil
}

// pick chooses among an index's manifests: the one named ref (a ref
// annotation or image name, or its digest prefix); else the only one;
// else the only one for this host's platform. Attestation manifests
// (platform unknown/unknown) are never picked.
func pick(cands []candidate, ref string) (candidate, error) {
	var usable []candidate
	seen := map[string]int{} // digest → index in usable: several refs, one image
	for _, c := range cands {
		if c.desc.Platform != nil && c.desc.Platform.OS == "unknown" {
			continue
		}
		if i, ok := seen[c.desc.Digest]; ok && c.desc.Digest != "" {
			for _, r := range c.refs {
				if !slices.Contains(usable[i].refs, r) {
					usable[i].refs = append(usable[i].refs, r)
				}
			}
			continue
		}
		seen[c.desc.Digest] = len(usable)
		usable = append(usable, c)
	}
	if ref != "" {
		var found []candidate
		for _, c := range usable {
			if refMatches(c.refs, ref) || strings.HasPrefix(c.desc.Digest, ref) || strings.HasPrefix(c.desc.Digest, "sha256:"+ref) {
				found = append(found, c)
			}
		}
		if len(found) > 1 {
			found = forHost(found)
		}
		switch len(found) {
		case 0:
			return candidate{}, fmt.Errorf("%w: no image named %q in the archive (it holds %s)", ErrInvalid, ref, describe(usable))
		case 1:
			return found[0], nil
		}
		return candidate{}, fmt.Errorf("%w: %d images match %q: %s", ErrInvalid, len(found), ref, describe(found))
	}
	switch len(usable) {
	case 0:
		return candidate{}, fmt.Errorf("%w: the index lists no image manifest", ErrInvalid)
	case 1:
		return usable[0], nil
	}
	host := forHost(usable)
	if len(host) == 1 {
		return host[0], nil
	}
	return candidate{}, fmt.Errorf("%w: the archive holds %d images (%s); name one with --tag", ErrInvalid, len(usable), describe(usable))
}

// refMatches reports whether ref names one of refs: exactly, as the tag
// ("latest" for "docker.io/library/app:latest"), or as the name without
// registry or tag.
func refMatches(refs []string, ref string) bool {
	for _, r := range refs {
		if r == ref || strings.HasSuffix(r, ":"+ref) || strings.HasSuffix(r, "/"+ref) {
			return true
		}
		name, _, _ := strings.Cut(r[strings.LastIndex(r, "/")+1:], ":")
		if name == ref || strings.TrimPrefix(r, "docker.io/library/") == ref || strings.TrimPrefix(r, "docker.io/") == ref {
			return true
		}
	}
	return false
}

// forHost keeps the candidates for this host (linux, GOARCH).
func forHost(cands []candidate) []candidate {
	var out []candidate
	for _, c := range cands {
		if p := c.desc.Platform; p != nil && p.OS == "linux" && p.Architecture == runtime.GOARCH {
			out = append(out, c)
		}
	}
	return out
}

// describe names candidates for an error message.
func describe(cands []candidate) string {
	var parts []string
	for _, c := range cands {
		s := strings.Join(c.refs, ",")
		if s == "" {
			s = c.desc.Digest
			if len(s) > 19 {
				s = s[:19]
			}
		}
		if p := c.desc.Platform; p != nil {
			s += " " + p.OS + "/" + p.Architecture
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "; ")
}

// selectDocker picks an image of an old-style docker save archive
// (manifest.json, <id>.json configs, <id>/layer.tar layers).
func (a *ociArchive) selectDocker(ref string) (*ociImage, error) {
	b, err := a.readSmall(dockerManifestFile)
	if err != nil {
		return nil, err
	}
	var entries []dockerManifestEntry
	if err := json.Unmarshal(b, &entries); err != nil {
		return nil, fmt.Errorf("%w: manifest.json: %v", ErrInvalid, err)
	}
	var cands []candidate
	configs := map[string]OCIConfig{}
	for i, e := range entries {
		cb, err := a.readSmall(cleanMember(e.Config))
		if err != nil {
			return nil, fmt.Errorf("manifest.json image %d: config: %w", i+1, err)
		}
		// The config's name is its digest (<hex>.json, or blobs/sha256/<hex>).
		id := strings.TrimSuffix(path.Base(e.Config), ".json")
		if len(id) == sha256.Size*2 && isHex(id) {
			if err := checkDigest("sha256:"+id, -1, sha256.Sum256(cb), int64(len(cb))); err != nil {
				return nil, fmt.Errorf("manifest.json image %d: config: %w", i+1, err)
			}
		}
		var cfg OCIConfig
		if err := json.Unmarshal(cb, &cfg); err != nil {
			return nil, fmt.Errorf("%w: manifest.json image %d: config %s: %v", ErrInvalid, i+1, e.Config, err)
		}
		key := fmt.Sprintf("%d", i)
		configs[key] = cfg
		cands = append(cands, candidate{
			desc: descriptor{Digest: "sha256:" + id, Platform: &platform{OS: cfg.OS, Architecture: cfg.Architecture}, Annotations: map[string]string{"index": key}},
			refs: e.RepoTags,
		})
	}
	c, err := pick(cands, ref)
	if err != nil {
		return nil, err
	}
	e := entries[atoi(c.desc.Annotations["index"])]
	img := &ociImage{format: "docker-save", refs: c.refs, config: configs[c.desc.Annotations["index"]]}
	for i, l := range e.Layers {
		name := cleanMember(l)
		if !a.has(name) {
			return nil, fmt.Errorf("%w: layer %d of %d: %s is missing from the archive", ErrInvalid, i+1, len(e.Layers), l)
		}
		layer := ociLayer{name: name, size: -1, compression: "none"}
		// The newer docker save names layers by their blob digest.
		if hexd, ok := strings.CutPrefix(name, "blobs/sha256/"); ok {
			layer.digest = "sha256:" + hexd
		}
		img.layers = append(img.layers, layer)
	}
	return img, img.attachDiffIDs()
}

// cleanMember turns a manifest.json path into an archive member name.
func cleanMember(p string) string {
	c, err := cleanName(strings.TrimPrefix(p, "/"))
	if err != nil {
		return p // open reports it missing
	}
	return c
}

// atoi parses a small non-negative decimal number (0 when it is not one).
func atoi(s string) int {
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0
		}
		n = n*10 + int(c-'0')
	}
	return n
}

// attachDiffIDs gives each layer the digest of its uncompressed tar from
// the config: there must be one per layer.
func (img *ociImage) attachDiffIDs() error {
	ids := img.config.RootFS.DiffIDs
	if len(ids) != len(img.layers) {
		return fmt.Errorf("%w: the image config lists %d layer digests (rootfs.diff_ids) for %d layers", ErrInvalid, len(ids), len(img.layers))
	}
	for i := range img.layers {
		if _, err := blobPath(ids[i]); err != nil {
			return fmt.Errorf("layer %d: diff_id: %w", i+1, err)
		}
		img.layers[i].diffID = ids[i]
	}
	return nil
}
