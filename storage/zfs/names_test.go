package zfs

import (
	"encoding/binary"
	"strings"
	"testing"
)

// These tests need no ZFS: they run on any host.

func TestEscape(t *testing.T) {
	for _, tc := range []struct{ name, want string }{
		{"v", "v"},
		{"containers/c1", "containers_sc1"},
		{"images/0123abcd", "images_s0123abcd"},
		{"a_b", "a__b"},
		{"a+b@c:d.e-f", "a_pb_ac:d.e-f"},
		{"_s", "__s"},
		{"custom/a/b", "custom_sa_sb"},
	} {
		got := escape(tc.name)
		if got != tc.want {
			t.Errorf("escape(%q) = %q, want %q", tc.name, got, tc.want)
		}
		if back, ok := unescape(got); !ok || back != tc.name {
			t.Errorf("unescape(%q) = %q %v, want %q", got, back, ok, tc.name)
		}
	}
	// What escape never makes does not unescape.
	for _, c := range []string{"_h0123", "_c1", "_x", "a_", "_", "a_zb"} {
		if n, ok := unescape(c); ok {
			t.Errorf("unescape(%q) = %q, want not ok", c, n)
		}
	}
}

// Distinct names map to distinct components, none of which is one of the
// driver's own (hidden) or a digest unless the name is long.
func TestComponentInjective(t *testing.T) {
	names := []string{"a/b", "a_sb", "a_b", "a__b", "a+b", "a_pb", "a@b", "a_ab", "_", "__", "c", "h", "x"}
	seen := map[string]string{}
	for _, n := range names {
		c, hashed := component(n)
		if hashed {
			t.Errorf("component(%q) is hashed", n)
		}
		if hidden(c) || strings.HasPrefix(c, hashPrefix) || strings.HasPrefix(c, recvPrefix) || strings.HasPrefix(c, deletedPrefix) {
			t.Errorf("component(%q) = %q looks like one of the driver's own", n, c)
		}
		if other, dup := seen[c]; dup {
			t.Errorf("%q and %q share component %q", n, other, c)
		}
		seen[c] = n
	}
}

func TestComponentLong(t *testing.T) {
	long := strings.Repeat("a/", 60) + "end"
	c, hashed := component(long)
	if !hashed || !strings.HasPrefix(c, hashPrefix) || len(c) > maxComponent {
		t.Fatalf("component of a %d-byte name = %q (hashed %v)", len(long), c, hashed)
	}
	if c2, _ := component(long + "x"); c2 == c {
		t.Fatal("two long names share a digest")
	}
	if n, ok := nameOf(c, long); !ok || n != long {
		t.Fatalf("nameOf(digest, prop) = %q %v", n, ok)
	}
	if _, ok := nameOf(c, "-"); ok {
		t.Fatal("a digest without its property has a name")
	}
	// Exactly maxComponent escaped bytes still escape.
	edge := strings.Repeat("b", maxComponent)
	if c, hashed := component(edge); hashed || c != edge {
		t.Fatalf("component of %d plain bytes = %q (hashed %v)", maxComponent, c, hashed)
	}
	// The longest snapshot name under the longest root stays within ZFS's limit.
	if n := maxRootLen + len("/volumes/") + maxComponent + 1 + maxComponent; n > 255 {
		t.Fatalf("longest snapshot name is %d bytes", n)
	}
}

func TestParseList(t *testing.T) {
	out := strings.Join([]string{
		"tank/s\tfilesystem\t-\t11\t5\tno\t-\t-",
		"tank/s/volumes\tfilesystem\t-\t12\t6\tno\t-\t-",
		"tank/s/volumes/v\tfilesystem\t-\t13\t7\tyes\t-\t-",
		"tank/s/volumes/v@b\tsnapshot\t-\t15\t9\t-\t-\t-",
		"tank/s/volumes/v@a\tsnapshot\t-\t14\t8\t-\t-\t-",
		"tank/s/volumes/_hdead\tfilesystem\ttank/s/volumes/v@a\t16\t10\tyes\tlong/name\t-",
		"tank/s/volumes/v@_hbeef\tsnapshot\t-\t17\t11\t-\t-\tlong-snap",
		"tank/s/zvol\tvolume\t-\t18\t12\t-\t-\t-",
		"",
	}, "\n")
	ix, err := parseList([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	if ix.has("tank/s/zvol") || !ix.has("tank/s/volumes/v@a") {
		t.Fatal("wrong entries kept")
	}
	snaps := ix.snaps["tank/s/volumes/v"]
	if len(snaps) != 3 || snaps[0].snap() != "a" || snaps[1].snap() != "b" || snaps[2].snap() != "_hbeef" {
		t.Fatalf("snapshots not in createtxg order: %v", snaps)
	}
	if got := snapshotNames(ix, "tank/s/volumes/v"); strings.Join(got, ",") != "a,b,long-snap" {
		t.Fatalf("snapshotNames = %q", got)
	}
	if c := ix.clones["tank/s/volumes/v@a"]; len(c) != 1 || c[0] != "tank/s/volumes/_hdead" {
		t.Fatalf("clones of v@a = %q", c)
	}
	if e := ix.byName["tank/s/volumes/v"]; !e.mounted || e.guid != 13 || e.createtxg != 7 {
		t.Fatalf("entry v = %+v", e)
	}
	if s := ix.snapshotByGUID("tank/s/volumes/v", 15); s == nil || s.snap() != "b" {
		t.Fatalf("snapshotByGUID(15) = %v", s)
	}
	if a := ix.after("tank/s/volumes/v", "tank/s/volumes/v@a"); len(a) != 2 {
		t.Fatalf("after(a) = %v", a)
	}
	d := &Driver{ds: "tank/s"}
	if got := d.volumeNames(ix, ""); strings.Join(got, ",") != "long/name,v" {
		t.Fatalf("volumeNames = %q", got)
	}
	if got := d.volumeNames(ix, "long/"); strings.Join(got, ",") != "long/name" {
		t.Fatalf("volumeNames(long/) = %q", got)
	}

	if _, err := parseList([]byte("tank/s\tfilesystem\t-\n")); err == nil {
		t.Fatal("a short line parsed")
	}
	if _, err := parseList([]byte("tank/s\tfilesystem\t-\tx\t5\tno\t-\t-\n")); err == nil {
		t.Fatal("a bad guid parsed")
	}
}

func TestParseStreamHead(t *testing.T) {
	head := func(order binary.ByteOrder, kind, from uint64) []byte {
		b := make([]byte, 312)
		order.PutUint32(b[0:], 0)
		order.PutUint64(b[8:], streamMagic)
		order.PutUint64(b[16:], 17<<2|kind)
		order.PutUint64(b[40:], 0xabc)
		order.PutUint64(b[48:], from)
		return b
	}
	for _, order := range []binary.ByteOrder{binary.LittleEndian, binary.BigEndian} {
		h, err := parseStreamHead(head(order, substream, 0))
		if err != nil || h.fromGUID != 0 || h.toGUID != 0xabc {
			t.Fatalf("%v full: %+v %v", order, h, err)
		}
		h, err = parseStreamHead(head(order, substream, 42))
		if err != nil || h.fromGUID != 42 {
			t.Fatalf("%v incremental: %+v %v", order, h, err)
		}
	}
	if _, err := parseStreamHead(head(binary.LittleEndian, 2, 0)); err == nil {
		t.Fatal("a compound (-R) stream was accepted")
	}
	if _, err := parseStreamHead(make([]byte, 312)); err == nil {
		t.Fatal("a stream without the magic was accepted")
	}
	if _, err := parseStreamHead([]byte("short")); err == nil {
		t.Fatal("a short stream was accepted")
	}
}
