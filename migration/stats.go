package migration

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"google.golang.org/protobuf/encoding/protowire"
)

// DumpStats are the memory pages of a CRIU checkpoint: written into it
// while the container was frozen, and left for lazy transfer (post-copy).
type DumpStats struct {
	PagesWritten int64
	PagesLazy    int64
}

// Page entry flags of CRIU's pagemap images.
const (
	pageInParent = 1 << 0
	pageLazy     = 1 << 1
)

// ReadDumpStats counts a checkpoint's pages from its pagemap images
// (pagemap-PID.img: a head, then entries {vaddr = 1, compat_nr_pages = 2,
// in_parent = 3, flags = 4, nr_pages = 5}); CRIU's own stats-dump image
// leaves the page counts at zero for lazy dumps. Pages flagged lazy were
// left to the page server when the dump was lazy, and written otherwise.
func ReadDumpStats(dir string, lazy bool) (DumpStats, error) {
	var st DumpStats
	files, err := filepath.Glob(filepath.Join(dir, "pagemap-*.img"))
	if err != nil || len(files) == 0 {
		return st, fmt.Errorf("no pagemap images in %s", dir)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return st, err
		}
		msgs, err := imageEntries(b)
		if err != nil {
			return st, fmt.Errorf("%s: %w", filepath.Base(f), err)
		}
		for i, m := range msgs {
			if i == 0 {
				continue // pagemap_head
			}
			nr, flags, err := pagemapEntry(m)
			if err != nil {
				return st, fmt.Errorf("%s: %w", filepath.Base(f), err)
			}
			switch {
			case lazy && flags&pageLazy != 0:
				st.PagesLazy += nr
			case flags&pageInParent == 0:
				st.PagesWritten += nr
			}
		}
	}
	return st, nil
}

// imageEntries splits a CRIU image (two magics, then size-prefixed
// protobuf entries) into its entries.
func imageEntries(b []byte) ([][]byte, error) {
	if len(b) < 8 {
		return nil, errors.New("short image")
	}
	b = b[8:]
	var out [][]byte
	for len(b) > 0 {
		if len(b) < 4 {
			return nil, errors.New("truncated entry size")
		}
		n := int(binary.LittleEndian.Uint32(b))
		if len(b) < 4+n {
			return nil, errors.New("truncated entry")
		}
		out = append(out, b[4:4+n])
		b = b[4+n:]
	}
	return out, nil
}

// pagemapEntry reads nr_pages (or the older 32-bit field) and flags
// (in_parent counts as the parent flag in images that predate flags).
func pagemapEntry(b []byte) (nr, flags int64, err error) {
	flags = -1
	var nr64 int64 = -1
	for len(b) > 0 {
		f, t, n := protowire.ConsumeTag(b)
		if n < 0 {
			return 0, 0, protowire.ParseError(n)
		}
		b = b[n:]
		if t == protowire.VarintType {
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return 0, 0, protowire.ParseError(n)
			}
			b = b[n:]
			switch f {
			case 2:
				nr = int64(v)
			case 3:
				if v != 0 && flags < 0 {
					flags = pageInParent
				}
			case 4:
				flags = int64(v)
			case 5:
				nr64 = int64(v)
			}
			continue
		}
		if n = protowire.ConsumeFieldValue(f, t, b); n < 0 {
			return 0, 0, protowire.ParseError(n)
		}
		b = b[n:]
	}
	if flags < 0 {
		flags = 0
	}
	if nr64 >= 0 {
		nr = nr64
	}
	return nr, flags, nil
}
