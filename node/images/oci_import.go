package images

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shoal-dev/shoal/internal/inroot"
)

// ImportOptions tune Import.
type ImportOptions struct {
	// Ref names the image to take from an OCI layout or docker save
	// archive holding several: a ref name annotation or repository tag
	// ("latest", "app:1.0", "docker.io/library/app:1.0") or a manifest
	// digest prefix. Empty: the only image, or the only one for this host.
	Ref string
	// Progress, if set, hears the phases of an OCI conversion: one per
	// layer, with the layer's compressed bytes as the total.
	Progress Progress
}

// archive formats sniff tells apart.
const (
	formatUnified = "unified"
	formatOCI     = "oci"
)

// ociWorkPrefix names the temporary directories of OCI conversions.
const ociWorkPrefix = "oci-"

// defaultPath is the PATH Docker gives an image's process when its config
// sets none.
const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// refKey carries an import's Ref through a context (WithImportRef).
type refKey struct{}

// WithImportRef makes Import under ctx take the image named ref from an
// archive holding several (ImportOptions.Ref), for callers that reach
// Import through layers that pass only a context (the API's upload,
// through node.ImportImage).
func WithImportRef(ctx context.Context, ref string) context.Context {
	return context.WithValue(ctx, refKey{}, ref)
}

// ImportWith is Import with options.
func ImportWith(ctx context.Context, s *Store, r io.Reader, opts ImportOptions) (Image, error) {
	if ref, ok := ctx.Value(refKey{}).(string); ok && opts.Ref == "" {
		opts.Ref = ref
	}
	tmp, fp, size, err := s.spool(ctx, r)
	if err != nil {
		return Image{}, err
	}
	defer s.dropTemp(tmp)
	format, compressed, err := sniff(ctx, tmp)
	if err != nil {
		return Image{}, fmt.Errorf("import image: %w", err)
	}
	if format == formatUnified {
		return s.commit(ctx, tmp, fp, size)
	}
	plain := tmp
	if compressed {
		if plain, err = s.decompressTemp(ctx, tmp); err != nil {
			return Image{}, fmt.Errorf("import image: %w", err)
		}
		defer s.dropTemp(plain)
	}
	img, err := s.importOCI(ctx, plain, opts)
	if err != nil {
		return Image{}, fmt.Errorf("import OCI image: %w", err)
	}
	return img, nil
}

// sniff reads the archive's entry names until one tells its format:
// metadata.yaml or rootfs/ (unified); oci-layout, index.json, manifest.json
// or blobs/ (an OCI layout or docker save archive). It also says whether
// the archive is compressed.
func sniff(ctx context.Context, f *os.File) (string, bool, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", false, err
	}
	head := make([]byte, 6)
	n, _ := io.ReadFull(f, head)
	head = head[:n]
	compressed := bytes.HasPrefix(head, magicGzip) || bytes.HasPrefix(head, magicXz) ||
		bytes.HasPrefix(head, magicBzip2) || bytes.HasPrefix(head, magicZstd)
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", false, err
	}
	zr, closer, err := decompress(f)
	if err != nil {
		return "", false, err
	}
	defer closer.Close()
	tr := tar.NewReader(zr)
	oci := false
	for i := 0; ; i++ {
		if i%256 == 0 {
			if err := ctx.Err(); err != nil {
				return "", false, err
			}
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			if i == 0 {
				return "", false, fmt.Errorf("%w: not a tar archive (nor a compressed one): %v", ErrInvalid, err)
			}
			return "", false, fmt.Errorf("%w: read tar: %v", ErrInvalid, err)
		}
		name, err := cleanName(hdr.Name)
		if err != nil {
			return "", false, err
		}
		switch {
		case name == metadataName || name == "rootfs" || strings.HasPrefix(name, rootfsPrefix):
			if oci {
				return "", false, fmt.Errorf("%w: the archive holds both a unified image (%s) and an OCI layout", ErrInvalid, name)
			}
			return formatUnified, compressed, nil
		case name == ociLayoutFile || name == ociIndexFile || name == dockerManifestFile:
			return formatOCI, compressed, nil
		case name == "blobs" || strings.HasPrefix(name, "blobs/"):
			oci = true // keep looking for index.json
		}
	}
	if oci {
		return formatOCI, compressed, nil
	}
	return "", false, fmt.Errorf("%w: not an image: no metadata.yaml and rootfs/ (unified image), index.json (OCI layout) or manifest.json (docker save)", ErrInvalid)
}

// decompressTemp writes the plain tar of a compressed archive to a new
// temporary file of the store.
func (s *Store) decompressTemp(ctx context.Context, f *os.File) (*os.File, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	zr, closer, err := decompress(f)
	if err != nil {
		return nil, err
	}
	defer closer.Close()
	out, err := os.CreateTemp(filepath.Join(s.dir, ".tmp"), "plain-")
	if err != nil {
		return nil, err
	}
	if _, err := io.Copy(out, ctxReader{ctx, zr}); err != nil {
		s.dropTemp(out)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%w: decompress: %v", ErrInvalid, err)
	}
	return out, nil
}

// importOCI converts the OCI layout or docker save archive in plain (an
// uncompressed tar) into a unified image and adds it. Nothing is added
// unless every blob checked out and every layer applied; the tree it
// builds in the store's temporary directory is removed in every case.
func (s *Store) importOCI(ctx context.Context, plain *os.File, opts ImportOptions) (Image, error) {
	progress := opts.Progress
	if progress == nil {
		progress = func(string, int64, int64) {}
	}
	a, err := openOCIArchive(ctx, plain)
	if err != nil {
		return Image{}, err
	}
	img, err := a.selectImage(opts.Ref)
	if err != nil {
		return Image{}, err
	}
	work, err := os.MkdirTemp(filepath.Join(s.dir, ".tmp"), ociWorkPrefix)
	if err != nil {
		return Image{}, err
	}
	defer os.RemoveAll(work)
	rootfs := filepath.Join(work, "rootfs")
	if err := os.Mkdir(rootfs, 0o755); err != nil {
		return Image{}, err
	}
	la, err := newLayerApplier(rootfs)
	if err != nil {
		return Image{}, err
	}
	defer la.close()
	t0 := time.Now()
	for i, l := range img.layers {
		phase := fmt.Sprintf("applying layer %d of %d", i+1, len(img.layers))
		blob, err := a.open(l.name)
		if err != nil {
			return Image{}, err
		}
		logger().Info("oci import: "+phase, "layer", cmpOr(l.digest, l.name), "bytes", blob.Size())
		progress(phase, 0, blob.Size())
		if err := applyLayer(ctx, la, blob, l, progress, phase); err != nil {
			return Image{}, fmt.Errorf("layer %d of %d: %w", i+1, len(img.layers), err)
		}
	}
	created := parseCreated(img.config.Created)
	md, app, err := ociMetadata(rootfs, img, created)
	if err != nil {
		return Image{}, err
	}
	if err := la.systemDirs(created); err != nil {
		return Image{}, err
	}
	if app != nil {
		b, err := json.MarshalIndent(app, "", "  ")
		if err != nil {
			return Image{}, err
		}
		if err := la.writeFile(AppConfigPath, append(b, '\n'), created); err != nil {
			return Image{}, fmt.Errorf("write %s: %w", AppConfigPath, err)
		}
	}
	if err := la.finish(created); err != nil {
		return Image{}, err
	}
	logger().Info("oci import: layers applied, packing", "layers", len(img.layers), "took", time.Since(t0))
	progress("packing image", 0, -1)
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(Pack(ctx, rootfs, md, pw)) }()
	out, err := s.Add(ctx, pr)
	pr.CloseWithError(err)
	return out, err
}

// applyLayer applies one layer blob and checks its digests.
func applyLayer(ctx context.Context, la *layerApplier, blob *io.SectionReader, l ociLayer, progress Progress, phase string) error {
	counted := &progressReader{r: blob, total: blob.Size(), phase: phase, f: progress}
	tr, verify, done, err := layerReader(counted, l)
	if err == nil {
		defer done()
		if err = la.apply(ctx, tr); err == nil {
			return verify()
		}
	}
	// A digest mismatch explains a broken stream (a gzip checksum, a tar
	// header) better than the error it caused.
	if l.digest != "" && ctx.Err() == nil {
		h := sha256.New()
		if n, cerr := io.Copy(h, io.NewSectionReader(blob, 0, blob.Size())); cerr == nil {
			var sum [sha256.Size]byte
			copy(sum[:], h.Sum(nil))
			if derr := checkDigest(l.digest, l.size, sum, n); derr != nil {
				return derr
			}
		}
	}
	return err
}

// progressReader reports bytes read.
type progressReader struct {
	r            io.Reader
	n, total     int64
	phase        string
	f            Progress
	lastReported int64
}

// Read reads and reports every 4 MiB.
func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.n += int64(n)
	if p.n-p.lastReported >= 4<<20 || err == io.EOF {
		p.lastReported = p.n
		p.f(p.phase, p.n, p.total)
	}
	return n, err
}

// parseCreated reads the config's creation time (zero time when absent).
func parseCreated(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Unix(0, 0)
	}
	return t
}

// ociMetadata makes the unified image's metadata.yaml and the container's
// AppConfig from the OCI config. The config is kept in properties:
// oci.entrypoint, oci.cmd, oci.env (JSON arrays), oci.workingdir, oci.user,
// and oci.init says what a container runs.
func ociMetadata(rootfs string, img *ociImage, created time.Time) (Metadata, *AppConfig, error) {
	cfg := img.config
	arch := cfg.Architecture
	if arch == "" {
		arch = runtime.GOARCH
	}
	props := map[string]string{
		"source.format": img.format,
		"os":            cmpOr(cfg.OS, "linux"),
	}
	desc := "OCI image"
	if img.format == "docker-save" {
		desc = "Docker image"
	}
	if len(img.refs) > 0 {
		props["oci.ref"] = strings.Join(img.refs, ",")
		desc += " " + img.refs[0]
	} else if img.manifest != "" {
		desc += " " + img.manifest[:min(len(img.manifest), 19)]
	}
	props["description"] = desc
	if img.manifest != "" {
		props["oci.manifest"] = img.manifest
	}
	if cfg.Variant != "" {
		props["oci.variant"] = cfg.Variant
	}
	jsonProp := func(k string, v []string) {
		if len(v) > 0 {
			b, _ := json.Marshal(v)
			props[k] = string(b)
		}
	}
	jsonProp("oci.entrypoint", cfg.Config.Entrypoint)
	jsonProp("oci.cmd", cfg.Config.Cmd)
	jsonProp("oci.env", cfg.Config.Env)
	if cfg.Config.WorkingDir != "" {
		props["oci.workingdir"] = cfg.Config.WorkingDir
	}
	if cfg.Config.User != "" {
		props["oci.user"] = cfg.Config.User
	}
	md := Metadata{Architecture: kernelArch(arch), CreationDate: created.Unix(), Properties: props}

	args := append(append([]string{}, cfg.Config.Entrypoint...), cfg.Config.Cmd...)
	if len(args) == 0 {
		if hasInit(rootfs) {
			props["oci.init"] = "/sbin/init (the image has no Entrypoint or Cmd: a system container)"
			return md, nil, nil
		}
		return Metadata{}, nil, fmt.Errorf("%w: the image config has no Entrypoint or Cmd, and the image has no /sbin/init: nothing to run", ErrInvalid)
	}
	app := &AppConfig{Args: args, Cwd: cmpOr(cfg.Config.WorkingDir, "/")}
	hasPath := false
	for _, e := range cfg.Config.Env {
		if strings.HasPrefix(e, "PATH=") {
			hasPath = true
		}
		app.Env = append(app.Env, e)
	}
	if !hasPath {
		app.Env = append([]string{defaultPath}, app.Env...)
	}
	uid, gid, err := resolveUser(rootfs, cfg.Config.User)
	if err != nil {
		return Metadata{}, nil, err
	}
	app.UID, app.GID = uid, gid
	if err := app.Validate(); err != nil {
		return Metadata{}, nil, err
	}
	props["oci.init"] = quoteArgs(args) + " (under LXC's minimal init, as pid 2)"
	return md, app, nil
}

// quoteArgs renders a command for people.
func quoteArgs(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if a != "" && !strings.ContainsAny(a, " \t'\"\\$`;&|<>*?()[]{}#~") {
			q[i] = a
		} else {
			q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
	}
	return strings.Join(q, " ")
}

// hasInit reports whether rootfs has an /sbin/init (a file or symlink).
func hasInit(rootfs string) bool {
	var st unix.Stat_t
	return unix.Lstat(filepath.Join(rootfs, "sbin", "init"), &st) == nil ||
		unix.Lstat(filepath.Join(rootfs, "usr", "sbin", "init"), &st) == nil
}

// resolveUser turns the config's User ("", "uid", "uid:gid", "name",
// "name:group", or mixed) into numeric ids, looking names up in the
// image's /etc/passwd and /etc/group. A user without a group gets its
// passwd entry's group (0 for a bare uid not listed).
func resolveUser(rootfs, user string) (uint32, uint32, error) {
	if user == "" {
		return 0, 0, nil
	}
	u, g, hasGroup := strings.Cut(user, ":")
	passwd := readEtc(rootfs, "etc/passwd")
	uid, gid := uint32(0), uint32(0)
	if n, err := strconv.ParseUint(u, 10, 32); err == nil {
		uid = uint32(n)
		if e, ok := findEtc(passwd, func(f []string) bool { return f[2] == u }); ok && len(e) > 3 {
			if n, err := strconv.ParseUint(e[3], 10, 32); err == nil {
				gid = uint32(n)
			}
		}
	} else {
		e, ok := findEtc(passwd, func(f []string) bool { return f[0] == u })
		if !ok || len(e) < 4 {
			return 0, 0, fmt.Errorf("%w: the image config's User %q: no user %q in the image's /etc/passwd", ErrInvalid, user, u)
		}
		un, err1 := strconv.ParseUint(e[2], 10, 32)
		gn, err2 := strconv.ParseUint(e[3], 10, 32)
		if err1 != nil || err2 != nil {
			return 0, 0, fmt.Errorf("%w: the image's /etc/passwd entry of %q is malformed", ErrInvalid, u)
		}
		uid, gid = uint32(un), uint32(gn)
	}
	if hasGroup {
		if n, err := strconv.ParseUint(g, 10, 32); err == nil {
			gid = uint32(n)
		} else {
			e, ok := findEtc(readEtc(rootfs, "etc/group"), func(f []string) bool { return f[0] == g })
			if !ok || len(e) < 3 {
				return 0, 0, fmt.Errorf("%w: the image config's User %q: no group %q in the image's /etc/group", ErrInvalid, user, g)
			}
			n, err := strconv.ParseUint(e[2], 10, 32)
			if err != nil {
				return 0, 0, fmt.Errorf("%w: the image's /etc/group entry of %q is malformed", ErrInvalid, g)
			}
			gid = uint32(n)
		}
	}
	return uid, gid, nil
}

// readEtc reads a small file of the image (resolved inside it); "" when
// it cannot.
func readEtc(rootfs, rel string) string {
	root, err := unix.Open(rootfs, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return ""
	}
	defer unix.Close(root)
	fd, err := inroot.Open(root, rel, unix.O_RDONLY|unix.O_NONBLOCK, inroot.InRoot)
	if err != nil {
		return ""
	}
	f := os.NewFile(uintptr(fd), rel)
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return ""
	}
	b, _ := io.ReadAll(io.LimitReader(f, 4<<20))
	return string(b)
}

// findEtc finds the first colon-separated line of an /etc file match accepts.
func findEtc(content string, match func([]string) bool) ([]string, bool) {
	sc := bufio.NewScanner(strings.NewReader(content))
	for sc.Scan() {
		f := strings.Split(sc.Text(), ":")
		if len(f) >= 3 && match(f) {
			return f, true
		}
	}
	return nil, false
}

// systemDirs makes the directories LXC mounts on (dev, proc, sys) and
// /etc (the daemon writes /etc/hostname) where the image lacks them.
func (l *layerApplier) systemDirs(mtime time.Time) error {
	for _, d := range []string{"dev", "proc", "sys", "etc"} {
		var st unix.Stat_t
		err := unix.Fstatat(l.u.root, d, &st, unix.AT_SYMLINK_NOFOLLOW)
		if err == nil {
			continue
		}
		if !errors.Is(err, unix.ENOENT) {
			return err
		}
		if err := l.u.entry(nil, d, &tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755, ModTime: mtime}); err != nil {
			return fmt.Errorf("mkdir /%s: %w", d, err)
		}
	}
	return nil
}

// writeFile writes a root-owned file (mode 0644) at rel, and its parent
// directory (0755) if it is missing.
func (l *layerApplier) writeFile(rel string, b []byte, mtime time.Time) error {
	dir := filepath.Dir(rel)
	if isDir, err := l.isDir(dir); err != nil {
		return err
	} else if !isDir {
		if err := l.remove(dir); err != nil {
			return err
		}
		if err := l.u.entry(nil, dir, &tar.Header{Typeflag: tar.TypeDir, Name: dir, Mode: 0o755, ModTime: mtime}); err != nil {
			return err
		}
	}
	return l.u.entry(bytes.NewReader(b), rel, &tar.Header{Typeflag: tar.TypeReg, Name: rel, Mode: 0o644, Size: int64(len(b)), ModTime: mtime})
}
