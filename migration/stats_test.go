package migration

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

// writePagemap writes a CRIU pagemap image: two magics, a head entry, then
// one entry per (nr_pages, flags) pair.
func writePagemap(t *testing.T, path string, entries [][2]uint64) {
	t.Helper()
	img := make([]byte, 8) // the magics; ReadDumpStats skips them
	add := func(msg []byte) {
		img = binary.LittleEndian.AppendUint32(img, uint32(len(msg)))
		img = append(img, msg...)
	}
	add(protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 1)) // pagemap_head
	for i, e := range entries {
		var m []byte
		m = protowire.AppendVarint(protowire.AppendTag(m, 1, protowire.VarintType), uint64(0x400000+i<<20))
		m = protowire.AppendVarint(protowire.AppendTag(m, 2, protowire.VarintType), 0) // compat field, superseded
		m = protowire.AppendVarint(protowire.AppendTag(m, 4, protowire.VarintType), e[1])
		m = protowire.AppendVarint(protowire.AppendTag(m, 5, protowire.VarintType), e[0])
		add(m)
	}
	if err := os.WriteFile(path, img, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestReadDumpStats(t *testing.T) {
	dir := t.TempDir()
	const present, lazy, parent = 4, 2, 1
	writePagemap(t, filepath.Join(dir, "pagemap-1.img"), [][2]uint64{{10, present}, {100, present | lazy}, {7, parent}})
	writePagemap(t, filepath.Join(dir, "pagemap-7.img"), [][2]uint64{{5, present | lazy}})

	st, err := ReadDumpStats(dir, false)
	if err != nil || st.PagesWritten != 115 || st.PagesLazy != 0 {
		t.Fatalf("stop-and-copy dump: %+v, %v; want 115 written (parent pages not), none lazy", st, err)
	}
	st, err = ReadDumpStats(dir, true)
	if err != nil || st.PagesWritten != 10 || st.PagesLazy != 105 {
		t.Fatalf("lazy dump: %+v, %v; want 10 written, 105 lazy", st, err)
	}
	if _, err := ReadDumpStats(t.TempDir(), false); err == nil {
		t.Fatal("a directory without pagemaps gave statistics")
	}
	bad := t.TempDir()
	if err := os.WriteFile(filepath.Join(bad, "pagemap-1.img"), []byte{1, 2, 3, 4, 5, 6, 7, 8, 200, 0, 0, 0, 1}, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadDumpStats(bad, false); err == nil {
		t.Fatal("a truncated pagemap gave statistics")
	}
}
