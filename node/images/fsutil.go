package images

import (
	"archive/tar"
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// peekMetadata reads a tarball only as far as its metadata.yaml, which Pack
// writes first.
func peekMetadata(r io.Reader) (Metadata, error) {
	zr, closer, err := decompress(r)
	if err != nil {
		return Metadata{}, err
	}
	defer closer.Close()
	tr := tar.NewReader(zr)
	for {
		hdr, err := tr.Next()
		if err != nil {
			return Metadata{}, fmt.Errorf("%w: no metadata.yaml: %v", ErrInvalid, err)
		}
		if name, err := cleanName(hdr.Name); err == nil && name == metadataName {
			b, err := io.ReadAll(io.LimitReader(tr, 1<<20))
			if err != nil {
				return Metadata{}, fmt.Errorf("%w: read metadata.yaml: %v", ErrInvalid, err)
			}
			return parseMetadata(b)
		}
	}
}

// mountsUnder lists the mount points at or below dir, deepest first.
func mountsUnder(dir string) ([]string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var found []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMountinfo(fields[4])
		if mp == abs || strings.HasPrefix(mp, abs+"/") {
			found = append(found, mp)
		}
	}
	// Deepest first: reverse mount order is a safe unmount order.
	for i, j := 0, len(found)-1; i < j; i, j = i+1, j-1 {
		found[i], found[j] = found[j], found[i]
	}
	return found, sc.Err()
}

// unescapeMountinfo decodes the octal escapes (\040 for space) of mountinfo.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			ok := true
			for _, c := range s[i+1 : i+4] {
				if c < '0' || c > '7' {
					ok = false
					break
				}
				v = v*8 + byte(c-'0')
			}
			if ok {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// emptyDir removes everything inside dir, keeping dir. It first detaches any
// mount below dir (a killed debootstrap may leave proc or sys) and refuses to
// delete anything if a mount remains, so it can never recurse into a host
// filesystem.
func emptyDir(dir string) error {
	mounts, err := mountsUnder(dir)
	if err != nil {
		return fmt.Errorf("empty %s: %w", dir, err)
	}
	abs, _ := filepath.Abs(dir)
	for _, m := range mounts {
		if m == abs {
			continue // dir itself may be a volume's mount point
		}
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("empty %s: unmount %s: %w", dir, m, err)
		}
	}
	if mounts, err = mountsUnder(dir); err != nil {
		return fmt.Errorf("empty %s: %w", dir, err)
	}
	for _, m := range mounts {
		if m != abs {
			return fmt.Errorf("empty %s: %s is still mounted; not deleting", dir, m)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("empty %s: %w", dir, err)
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return fmt.Errorf("empty %s: %w", dir, err)
		}
	}
	return nil
}
