package images

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"
)

// Store is a directory of image tarballs named by fingerprint. Each image is
// two files: <fingerprint> (the tarball, byte for byte as added) and
// <fingerprint>.yaml (its Image record, written last: an image exists once
// its record does). Temporary files live in .tmp/. A Store is safe for
// concurrent use; several Stores may share a directory.
type Store struct {
	dir string
	mu  sync.Mutex // serialises commits and deletes within this process
}

// recordSuffix names an image's record file.
const recordSuffix = ".yaml"

// staleTemp is the age after which Open removes leftover temporary files.
const staleTemp = time.Hour

// Open opens the store in dir, creating it if needed, and removes temporary
// files that earlier crashed additions left behind.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(filepath.Join(dir, ".tmp"), 0o700); err != nil {
		return nil, fmt.Errorf("open image store %s: %w", dir, err)
	}
	s := &Store{dir: dir}
	entries, err := os.ReadDir(filepath.Join(dir, ".tmp"))
	if err != nil {
		return nil, fmt.Errorf("open image store %s: %w", dir, err)
	}
	for _, e := range entries {
		if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > staleTemp {
			if e.IsDir() && strings.HasPrefix(e.Name(), ociWorkPrefix) {
				_ = os.RemoveAll(filepath.Join(dir, ".tmp", e.Name())) // an OCI conversion's tree
				continue
			}
			_ = os.Remove(filepath.Join(dir, ".tmp", e.Name()))
		}
	}
	return s, nil
}

// Add stores the image tarball read from r and returns its Image. The
// fingerprint is the SHA-256 of the bytes read. The tarball must be a unified
// image (metadata.yaml and rootfs/; plain, gzip, xz, zstd or bzip2), else Add fails
// with ErrInvalid. Adding an image already present returns it unchanged. The
// image appears atomically: readers see all of it or nothing.
func (s *Store) Add(ctx context.Context, r io.Reader) (Image, error) {
	tmp, fp, size, err := s.spool(ctx, r)
	if err != nil {
		return Image{}, err
	}
	defer s.dropTemp(tmp)
	return s.commit(ctx, tmp, fp, size)
}

// spool copies r into a temporary file of the store and returns it with
// the fingerprint and size of what was read. The caller drops it with
// dropTemp (a no-op once commit renamed it).
func (s *Store) spool(ctx context.Context, r io.Reader) (*os.File, string, int64, error) {
	tmp, err := os.CreateTemp(filepath.Join(s.dir, ".tmp"), "add-")
	if err != nil {
		return nil, "", 0, fmt.Errorf("add image: %w", err)
	}
	h := sha256.New()
	size, err := io.Copy(io.MultiWriter(tmp, h), ctxReader{ctx, r})
	if err != nil {
		s.dropTemp(tmp)
		return nil, "", 0, fmt.Errorf("add image: receive: %w", err)
	}
	return tmp, hex.EncodeToString(h.Sum(nil)), size, nil
}

// dropTemp closes and removes a temporary file.
func (s *Store) dropTemp(f *os.File) {
	f.Close()
	os.Remove(f.Name())
}

// commit checks the unified tarball spooled in tmp and moves it into the
// store under fp (an image already there is returned unchanged).
func (s *Store) commit(ctx context.Context, tmp *os.File, fp string, size int64) (Image, error) {
	if img, err := s.Get(fp); err == nil {
		return img, nil
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return Image{}, fmt.Errorf("add image %s: %w", fp, err)
	}
	md, err := validate(ctx, tmp)
	if err != nil {
		return Image{}, fmt.Errorf("add image %s: %w", fp, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		return Image{}, fmt.Errorf("add image %s: %w", fp, err)
	}
	if err := tmp.Sync(); err != nil {
		return Image{}, fmt.Errorf("add image %s: %w", fp, err)
	}
	img := Image{Fingerprint: fp, Size: size, Metadata: md}
	rec, err := yaml.Marshal(img)
	if err != nil {
		return Image{}, fmt.Errorf("add image %s: encode record: %w", fp, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := os.Rename(tmp.Name(), s.Path(fp)); err != nil {
		return Image{}, fmt.Errorf("add image %s: %w", fp, err)
	}
	if err := writeFileAtomic(filepath.Join(s.dir, ".tmp"), s.Path(fp)+recordSuffix, rec); err != nil {
		return Image{}, fmt.Errorf("add image %s: %w", fp, err)
	}
	logger().Info("image added", "fingerprint", fp, "size", size, "os", md.Properties["os"], "release", md.Properties["release"])
	return img, nil
}

// Get returns the image with fingerprint fp (the full one; see Resolve).
func (s *Store) Get(fp string) (Image, error) {
	if !isHex(fp) || len(fp) != sha256.Size*2 {
		return Image{}, fmt.Errorf("get image %q: %w: not a fingerprint", fp, ErrInvalid)
	}
	b, err := os.ReadFile(s.Path(fp) + recordSuffix)
	if errors.Is(err, fs.ErrNotExist) {
		return Image{}, fmt.Errorf("get image %s: %w", fp, ErrNotFound)
	}
	if err != nil {
		return Image{}, fmt.Errorf("get image %s: %w", fp, err)
	}
	var img Image
	if err := yaml.Unmarshal(b, &img); err != nil {
		return Image{}, fmt.Errorf("get image %s: decode record: %w", fp, err)
	}
	return img, nil
}

// List returns every image, sorted by fingerprint.
func (s *Store) List() ([]Image, error) {
	fps, err := s.fingerprints()
	if err != nil {
		return nil, err
	}
	imgs := make([]Image, 0, len(fps))
	for _, fp := range fps {
		img, err := s.Get(fp)
		if errors.Is(err, ErrNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("list images: %w", err)
		}
		imgs = append(imgs, img)
	}
	return imgs, nil
}

// Delete removes the image with fingerprint fp. Readers that already opened
// it keep reading it.
func (s *Store) Delete(fp string) error {
	if _, err := s.Get(fp); err != nil {
		return fmt.Errorf("delete: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := os.Remove(s.Path(fp) + recordSuffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete image %s: %w", fp, err)
	}
	if err := os.Remove(s.Path(fp)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete image %s: %w", fp, err)
	}
	logger().Info("image deleted", "fingerprint", fp)
	return nil
}

// Open returns the tarball of image fp, as it was added.
func (s *Store) Open(fp string) (io.ReadCloser, error) {
	if _, err := s.Get(fp); err != nil {
		return nil, fmt.Errorf("open: %w", err)
	}
	f, err := os.Open(s.Path(fp))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("open image %s: %w", fp, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("open image %s: %w", fp, err)
	}
	return f, nil
}

// Path returns where the tarball of image fp is (or would be) stored.
func (s *Store) Path(fp string) string {
	return filepath.Join(s.dir, fp)
}

// Resolve returns the one full fingerprint that starts with prefix (case
// insensitive), like LXD: ErrNotFound if none does, ErrAmbiguous if several
// do, ErrInvalid if prefix is empty or not hexadecimal.
func (s *Store) Resolve(prefix string) (string, error) {
	p := strings.ToLower(prefix)
	if p == "" || !isHex(p) || len(p) > sha256.Size*2 {
		return "", fmt.Errorf("resolve %q: %w: not a fingerprint prefix", prefix, ErrInvalid)
	}
	fps, err := s.fingerprints()
	if err != nil {
		return "", err
	}
	var found []string
	for _, fp := range fps {
		if strings.HasPrefix(fp, p) {
			found = append(found, fp)
		}
	}
	switch len(found) {
	case 0:
		return "", fmt.Errorf("resolve %q: %w", prefix, ErrNotFound)
	case 1:
		return found[0], nil
	}
	return "", fmt.Errorf("resolve %q: %w: matches %d images", prefix, ErrAmbiguous, len(found))
}

// fingerprints lists the fingerprints that have a record, sorted.
func (s *Store) fingerprints() ([]string, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("list images in %s: %w", s.dir, err)
	}
	var fps []string
	for _, e := range entries {
		fp, ok := strings.CutSuffix(e.Name(), recordSuffix)
		if ok && len(fp) == sha256.Size*2 && isHex(fp) {
			fps = append(fps, fp)
		}
	}
	sort.Strings(fps)
	return fps, nil
}

// Import stores an image read from r, whose format it finds from the
// content: a unified image tarball (Shoal's or LXD's: metadata.yaml and
// rootfs/, plain tar, gzip, xz, zstd or bzip2) is stored as it is (Store.Add);
// an OCI image layout or a `docker save` archive (a tar, plain or
// compressed) is converted into a unified image (ImportOCI).
func Import(ctx context.Context, s *Store, r io.Reader) (Image, error) {
	return ImportWith(ctx, s, r, ImportOptions{})
}

// validate reads a whole tarball and checks that it is a unified image: a
// readable tar stream with a valid metadata.yaml, a rootfs/ tree, and safe
// entry names. It returns the metadata.
func validate(ctx context.Context, r io.Reader) (Metadata, error) {
	zr, closer, err := decompress(r)
	if err != nil {
		return Metadata{}, err
	}
	defer closer.Close()
	tr := tar.NewReader(zr)
	var md Metadata
	haveMD, haveRoot := false, false
	for n := 0; ; n++ {
		if n%256 == 0 {
			if err := ctx.Err(); err != nil {
				return Metadata{}, err
			}
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return Metadata{}, fmt.Errorf("%w: not a tar stream: %v", ErrInvalid, err)
		}
		name, err := cleanName(hdr.Name)
		if err != nil {
			return Metadata{}, err
		}
		if err := refuseSparse(hdr); err != nil {
			return Metadata{}, err
		}
		switch {
		case name == metadataName:
			b, err := io.ReadAll(io.LimitReader(tr, 1<<20))
			if err != nil {
				return Metadata{}, fmt.Errorf("%w: read metadata.yaml: %v", ErrInvalid, err)
			}
			if md, err = parseMetadata(b); err != nil {
				return Metadata{}, err
			}
			haveMD = true
		case name == "rootfs" || strings.HasPrefix(name, rootfsPrefix):
			haveRoot = true
		}
		if _, err := io.Copy(io.Discard, tr); err != nil {
			return Metadata{}, fmt.Errorf("%w: %s: %v", ErrInvalid, hdr.Name, err)
		}
	}
	if !haveMD {
		return Metadata{}, fmt.Errorf("%w: no metadata.yaml (not a unified image tarball)", ErrInvalid)
	}
	if !haveRoot {
		return Metadata{}, fmt.Errorf("%w: no rootfs/ (split images are not supported)", ErrInvalid)
	}
	return md, nil
}

// writeFileAtomic writes b to path through a temporary file in tmpDir.
func writeFileAtomic(tmpDir, path string, b []byte) error {
	f, err := os.CreateTemp(tmpDir, "rec-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// isHex reports whether s is made of lowercase hexadecimal digits.
func isHex(s string) bool {
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// ctxReader stops a copy when its context ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

// Read reads from the underlying reader unless the context has ended.
func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
